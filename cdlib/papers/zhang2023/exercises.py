"""Chapter 4 exercises: reference solutions, their checks and their independent oracles.

- 4.1 ``AdaIN``: the adaptive instance normalisation through which the texture code modulates Zhang et al.'s
  generator (oracle: the ``zhang2023`` model's own block, :class:`cdlib.papers.zhang2023.model.AdaIN`, with the
  student's weights);
- 4.2 ``miou_from_confusion``: the mean intersection over union of a parser from its confusion matrix (oracle:
  torchmetrics' ``MulticlassJaccardIndex(average="macro")`` on label maps that have that confusion matrix).

The exercises register with ``cdlib.exercises`` when the paper package is imported (``load_papers``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from cdlib.exercises.grading import expect, expect_close, expect_nan, expect_raises, register_exercise


class AdaIN(nn.Module):
    """Exercise 4.1: adaptive instance normalisation, the way the texture
    code ``t`` modulates the structure features ``h`` in Zhang et al.'s
    generator.

    ``AdaIN(channels, style_dim)`` holds ``norm``, an
    ``nn.InstanceNorm2d(channels, affine=False)`` (per sample and channel:
    subtract the mean over H x W, divide by ``sqrt(var + 1e-5)`` with the
    biased variance), and ``affine``, an ``nn.Linear(style_dim, 2 *
    channels)``. ``forward(h, t)`` takes ``h`` ``(B, C, H, W)`` and ``t``
    ``(B, style_dim)``, splits ``affine(t)`` into ``gamma`` (its first
    ``C`` outputs) and ``beta`` (the last ``C``), one value per sample and
    channel, and returns ``norm(h) * (1 + gamma) + beta``: ``(B, C, H,
    W)``. ``ValueError`` when the last axis of ``t`` is not ``style_dim``.
    """

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.style_dim = style_dim
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.shape[-1] != self.style_dim:
            raise ValueError(f"t has {t.shape[-1]} features, expected style_dim={self.style_dim}")
        gamma, beta = self.affine(t)[:, :, None, None].chunk(2, dim=1)
        return self.norm(h) * (1 + gamma) + beta


def miou_from_confusion(confusion) -> float:
    """Exercise 4.2: the mean intersection over union (mIoU) of a parser,
    from its ``(K, K)`` confusion matrix (row ``i``, column ``j``: the
    number of pixels of target class ``i`` predicted as class ``j``).

    Class ``c``'s IoU is ``TP / (TP + FP + FN)``: ``TP`` the diagonal
    entry, ``FN`` the rest of row ``c``, ``FP`` the rest of column ``c``.
    The mean is over the classes present in the target or the prediction:
    a class with ``TP + FP + FN = 0`` is left out (it is neither right nor
    wrong), as torchmetrics' ``MulticlassJaccardIndex(average="macro")``
    does; a class present only in the prediction counts with IoU 0.
    Returns a ``float``, ``nan`` for an all-zero matrix. ``ValueError``
    when the matrix is not square (2-D, ``K x K``) or has a negative
    entry.
    """
    c = torch.as_tensor(confusion, dtype=torch.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"expected a square (K, K) confusion matrix, got shape {tuple(c.shape)}")
    if bool((c < 0).any()):
        raise ValueError("a confusion matrix counts pixels: no negative entries")
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp  # TP + FP + FN
    present = union > 0
    if not bool(present.any()):
        return math.nan
    return float((tp[present] / union[present]).mean())


# ------------------------------------------------------------------------------------------------ checks
def _oracle_adain():
    from cdlib.papers.zhang2023.model import AdaIN as ModelAdaIN

    return ModelAdaIN


def _instance_norm_by_hand(h: torch.Tensor) -> torch.Tensor:
    h = h.double()
    mean = h.mean(dim=(2, 3), keepdim=True)
    var = ((h - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (h - mean) / torch.sqrt(var + 1e-5)


def _check_adain(fn, against):
    torch.manual_seed(0)
    m = fn(3, 5)
    expect(isinstance(m, nn.Module), f"AdaIN(3, 5) is a {type(m).__name__}, not an nn.Module")
    expect(isinstance(getattr(m, "affine", None), nn.Linear), "AdaIN(3, 5).affine should be an nn.Linear")
    expect(tuple(m.affine.weight.shape) == (6, 5), f"AdaIN(3, 5).affine.weight has shape "
                                                  f"{tuple(m.affine.weight.shape)}, expected (6, 5)")
    n_params = sum(p.numel() for p in m.parameters())
    expect(n_params == 6 * 5 + 6, f"AdaIN(3, 5) has {n_params} parameters, expected 36 (the affine layer only: "
                                  f"the instance norm has no affine parameters)")
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 3, 4, 5, generator=g) * 3 + 2
    t = torch.randn(2, 5, generator=g)
    # known answer 1: a zero affine layer leaves the instance norm alone
    with torch.no_grad():
        m.affine.weight.zero_()
        m.affine.bias.zero_()
    expect_close(m(h, t), _instance_norm_by_hand(h), "a zero affine layer (gamma = beta = 0): the plain instance "
                 "norm (biased variance, eps 1e-5)", rtol=1e-5, atol=1e-5)
    # known answer 2: bias only: gamma = (1, 2, 3), beta = (-1, 0, 10) for every sample
    with torch.no_grad():
        m.affine.bias.copy_(torch.tensor([1.0, 2.0, 3.0, -1.0, 0.0, 10.0]))
    gamma = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    beta = torch.tensor([-1.0, 0.0, 10.0]).reshape(1, 3, 1, 1)
    expect_close(m(h, t), _instance_norm_by_hand(h) * (1 + gamma) + beta, "affine bias (1, 2, 3, -1, 0, 10): "
                 "gamma = the first C outputs, beta = the last C", rtol=1e-5, atol=1e-5)
    flat = torch.full((1, 3, 2, 2), 7.0)  # (eps 1e-5 magnifies float32 rounding in the mean: atol 1e-3)
    expect_close(m(flat, t[:1]), beta.expand(1, 3, 2, 2), "a constant input (its instance norm is 0): "
                 "the output is beta", rtol=1e-5, atol=1e-3)
    # the model's own block, with the same weights, on seeded inputs
    for c, s, size in ((3, 5, (4, 5)), (8, 16, (7, 7)), (1, 3, (2, 9)), (16, 8, (8, 8))):
        torch.manual_seed(c * 100 + s)
        mine = fn(c, s)
        ref = against(c, s)
        ref.affine.load_state_dict(mine.affine.state_dict())
        h = (torch.randn(3, c, *size, generator=g) * 2 - 1).requires_grad_(True)
        t = torch.randn(3, s, generator=g, requires_grad=True)
        out = mine(h, t)
        expect(tuple(out.shape) == (3, c, *size), f"AdaIN({c}, {s}) on h {tuple(h.shape)}: output shape "
                                                  f"{tuple(out.shape)}, expected {tuple(h.shape)}")
        expect_close(out, ref(h, t), f"AdaIN({c}, {s}) on seeded h {tuple(h.shape)} and t {tuple(t.shape)}",
                     rtol=1e-5, atol=1e-5)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        expect(t.grad is not None and bool(t.grad.abs().sum() > 0), "gradients must reach the texture code t")
        expect(h.grad is not None, "gradients must reach the features h")
    expect_raises(ValueError, fn(4, 6), torch.zeros(2, 4, 3, 3), torch.zeros(2, 7),
                  what="t with 7 features for style_dim=6")


def _labels_from_confusion(c: torch.Tensor):
    """Flat (prediction, target) label maps whose confusion matrix is ``c`` (rows target, columns prediction)."""
    k = c.shape[0]
    counts = c.reshape(-1).long()
    target = torch.arange(k).repeat_interleave(k).repeat_interleave(counts)
    pred = torch.arange(k).repeat(k).repeat_interleave(counts)
    return pred, target


def _oracle_miou_from_confusion():
    from torchmetrics.classification import MulticlassJaccardIndex

    def miou(confusion) -> float:
        c = torch.as_tensor(confusion)
        k = c.shape[0]
        pred, target = _labels_from_confusion(c)
        if pred.numel() == 0:
            return math.nan
        macro = MulticlassJaccardIndex(num_classes=k, average="macro")
        value = float(macro(pred, target))
        # the documented convention (absent classes out of the mean) is what the check tests: should a
        # torchmetrics version average over every class, take its per-class IoU over the classes that occur
        present = torch.unique(torch.cat([pred, target]))
        per_class = MulticlassJaccardIndex(num_classes=k, average="none")(pred, target)
        if len(present) < k and not math.isclose(value, float(per_class[present].mean()), rel_tol=1e-6):
            value = float(per_class[present].mean())
        return value

    return miou


def _check_miou_from_confusion(fn, against):
    # known answer, worked out by hand: rows target, columns prediction
    #   class 0: TP 5, FN 1 + 0, FP 2 + 0 -> 5/8;  class 1: TP 3, FN 2 + 1, FP 1 + 1 -> 3/8;
    #   class 2: TP 4, FN 0 + 1, FP 0 + 1 -> 4/6;  mean (5/8 + 3/8 + 2/3) / 3 = 5/9
    c = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 1, 4]])
    out = fn(c)
    expect(isinstance(out, float), f"the mIoU is a float, got {type(out).__name__}")
    expect_close(out, 5 / 9, "the 3x3 matrix [[5, 1, 0], [2, 3, 1], [0, 1, 4]] (IoU 5/8, 3/8, 2/3)", rtol=1e-9)
    expect_close(fn(c.numpy()), 5 / 9, "the same matrix as a NumPy array", rtol=1e-9)
    expect_close(fn([[4, 0], [0, 6]]), 1.0, "a diagonal matrix (a perfect parser)", rtol=1e-9)
    # class 1 absent from both target and prediction: left out of the mean
    expect_close(fn([[3, 0, 1], [0, 0, 0], [1, 0, 2]]), (3 / 5 + 2 / 4) / 2,
                 "class 1 absent from target and prediction (left out of the mean)", rtol=1e-9)
    # class 2 only predicted (never in the target): IoU 0, counted
    expect_close(fn([[2, 0, 2], [0, 4, 0], [0, 0, 0]]), (2 / 4 + 1 + 0) / 3,
                 "class 2 predicted but never in the target (IoU 0, in the mean)", rtol=1e-9)
    expect_nan(fn(torch.zeros(3, 3)), "an all-zero matrix (no class present)")
    # seeded matrices against the other implementation, some with absent classes
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 5, 8, 19):
        for absent in (0, 1, 2):
            c = torch.randint(0, 12, (k, k), generator=g)
            c += torch.diag(torch.randint(0, 40, (k,), generator=g))
            for j in torch.randperm(k, generator=g)[:min(absent, k - 1)]:
                c[j, :] = 0
                c[:, j] = 0
            expect_close(fn(c), against(c), f"a seeded {k}x{k} confusion matrix with {absent} absent class(es)",
                         rtol=1e-5, atol=1e-7)
    expect_raises(ValueError, fn, torch.ones(2, 3), what="a 2x3 matrix (not square)")
    expect_raises(ValueError, fn, torch.ones(3), what="a vector (not a matrix)")
    expect_raises(ValueError, fn, torch.tensor([[2, -1], [0, 3]]), what="a negative entry")


register_exercise("4.1", AdaIN, check=_check_adain, oracle=_oracle_adain)
register_exercise("4.2", miou_from_confusion, check=_check_miou_from_confusion, oracle=_oracle_miou_from_confusion)
