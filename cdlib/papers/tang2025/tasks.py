"""The analysis tasks of Paper C on features at stride 4 (f1 of the backbone, f2 after the RE module, or f3
decoded from a stream): never on pixels.

- :func:`pooled_features`: the tail's pooled layer4 vector of every image of a dataset, from any of the three;
- :func:`fit_probe` / :func:`probe_accuracy`: a linear classifier on frozen pooled features (the linear probe).
  The quick probe here (full-batch, standardised features, L-BFGS, weight decay) is what the zoo's manifest and
  the chapter report; the official probe recipe (SGD lr 30, 130 epochs) is :data:`OFFICIAL_PROBE`, run by
  :func:`train_probe` in the paper profile.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...progress import progress_bar

# The official linear-probe recipe (MoCo's main_lincls.py as used by the paper): SGD momentum 0.9, lr 30,
# weight decay 0, batch 256, 130 epochs, lr x 0.1 at epochs 65, 90 and 110.
OFFICIAL_PROBE = dict(lr=30.0, momentum=0.9, weight_decay=0.0, batch_size=256, epochs=130, milestones=(65, 90, 110))

WHERE = ("f1", "f2", "f3")


def features_at(model, x: torch.Tensor, where: str) -> torch.Tensor:
    """Stride-4 features of images ``x``: ``f1`` (head), ``f2`` (head + RE module, in eval: rounded latent) or
    ``f3`` (head + RE + the codec's round trip through its quantised latent; in eval mode the y_hat that the
    stream decodes to, computed without the range coder).  Call it on a model in eval mode."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    f = model.head(x)
    if where == "f1":
        return f
    f = model.re.filter(f)
    if where == "f2":
        return f
    return model.g_s(model.entropy(model.g_a(f))["y_hat"])  # eval: what the decoder gets from the stream


@torch.no_grad()
def pooled_features(model, dataset, where: str = "f1", batch_size: int = 100, features=None,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled layer4 vectors (N, C4), labels (N,)) of ``dataset``; ``features``: the stride-4 feature maps
    of the dataset's images (e.g. decoded from streams) in place of computing them from pixels at ``where``."""
    model = model.eval()
    out, labels = [], []
    bar = progress_bar()(range(0, len(dataset), batch_size), desc=f"features ({where})", leave=False,
                         disable=not progress)
    for s in bar:
        idx = range(s, min(len(dataset), s + batch_size))
        if features is None:
            x = torch.stack([dataset[i]["image"] for i in idx])
            f = features_at(model, x, where)
        else:
            f = torch.stack([features[i] for i in idx])
        out.append(model.tail.pool(model.tail(f)))
        labels.append(torch.stack([torch.as_tensor(dataset[i]["label"]) for i in idx]))
    return torch.cat(out), torch.cat(labels)


class LinearProbe(nn.Module):
    """Standardisation (fitted on the training features) + one linear layer."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc((v - self.mean) / self.std)


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
              iters: int = 200, seed: int = 0) -> LinearProbe:
    """A linear probe fitted by full-batch L-BFGS on cross-entropy + ``weight_decay`` * |W|^2 (deterministic
    for a seed)."""
    g = torch.Generator().manual_seed(seed)
    probe = LinearProbe(train_x.shape[1], num_classes)
    with torch.no_grad():
        probe.mean.copy_(train_x.mean(0))
        probe.std.copy_(train_x.std(0).clamp_min(1e-6))
        probe.fc.weight.copy_(torch.randn(probe.fc.weight.shape, generator=g) * 0.01)
        probe.fc.bias.zero_()
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(train_x), train_y) + weight_decay * probe.fc.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((probe(x).argmax(1) == y).float().mean())


def standard_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` test images."""
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1)))
