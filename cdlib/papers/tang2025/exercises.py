"""Chapter 5 exercises: reference solutions, their checks and their independent oracles.

- 5.1 ``heatmap_box``: ContrastiveCrop's box around the hot part of a feature map (oracle: the library's
  :func:`cdlib.papers.tang2025.moco.heatmap_boxes`, which stage 1 uses);
- 5.2 ``info_nce``: MoCo's contrastive loss of queries against their keys and a queue of negatives (oracle:
  :func:`torch.nn.functional.cross_entropy` on the logits written out as a matrix product of all keys).

The exercises register with ``cdlib.exercises`` when the paper package is imported (``load_papers``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cdlib.exercises.grading import expect, expect_close, expect_raises, register_exercise


def heatmap_box(feature_map, image_size, threshold: float = 0.1):
    """Exercise 5.1: ContrastiveCrop's box of each image from the last
    feature map of the backbone.

    ``feature_map`` ``(B, C, h, w)``; ``image_size`` an int or ``(H, W)``.
    Per image: sum the channels, min-max normalise the ``(h, w)`` map to
    [0, 1] (``(m - min) / (max - min)``; a flat map gives zeros), upsample
    it to ``(H, W)`` with bilinear interpolation (``align_corners=False``),
    and take the bounding box of the pixels above ``threshold``. Returns a
    float tensor ``(B, 4)``: ``(x0, y0, x1, y1)`` as fractions of the
    image width and height, ``x1``/``y1`` exclusive (a box over pixel
    columns 3..9 has ``x0 = 3 / W``, ``x1 = 10 / W``). An image with no
    pixel above the threshold gets the whole image, ``(0, 0, 1, 1)``.
    ``ValueError`` when ``feature_map`` is not 4-D.
    """
    f = torch.as_tensor(feature_map, dtype=torch.float32)
    if f.ndim != 4:
        raise ValueError(f"feature_map must be (B, C, h, w), got shape {tuple(f.shape)}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    heat = f.sum(1, keepdim=True)
    lo, hi = heat.amin((2, 3), keepdim=True), heat.amax((2, 3), keepdim=True)
    heat = (heat - lo) / (hi - lo).clamp_min(1e-12)
    heat = F.interpolate(heat, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    boxes = []
    for m in heat > threshold:
        if not bool(m.any()):
            boxes.append([0.0, 0.0, 1.0, 1.0])
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([int(xs.min()) / W, int(ys.min()) / H, (int(xs.max()) + 1) / W, (int(ys.max()) + 1) / H])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def info_nce(q, k, queue, temperature: float):
    """Exercise 5.2: MoCo's InfoNCE loss.

    ``q`` and ``k`` ``(N, D)``: the queries and their positive keys (row
    ``i`` of ``k`` is the key of row ``i`` of ``q``), ``queue`` ``(D, K)``:
    ``K`` negative keys as columns; all L2-normalised. For each query the
    logits are its dot product with its own key followed by its ``K`` dot
    products with the queue, all divided by ``temperature``; the loss is
    the cross-entropy that picks the positive (class 0), averaged over the
    ``N`` queries. Returns a scalar tensor that carries gradients to ``q``
    (none flow into the queue). ``ValueError`` when the shapes do not fit
    or ``temperature`` is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.ndim != 2 or q.shape != k.shape or queue.ndim != 2 or queue.shape[0] != q.shape[1]:
        raise ValueError(f"expected q, k (N, D) and queue (D, K), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(queue.shape)}")
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.detach()
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


# ------------------------------------------------------------------------------------------------ checks
def _oracle_heatmap_box():
    from cdlib.papers.tang2025.moco import heatmap_boxes

    return heatmap_boxes


def _check_heatmap_box(fn, against):
    # known answer: one hot cell of a 4x4 map at row 1, column 2 -> after bilinear upsampling to 16 px the
    # values above 0.1 span columns 8..11 plus the blend into the neighbours
    f = torch.zeros(1, 2, 4, 4)
    f[0, :, 1, 2] = 1.0
    box = torch.as_tensor(fn(f, 16))
    expect(tuple(box.shape) == (1, 4), f"one image gives a (1, 4) box tensor, got shape {tuple(box.shape)}")
    expect_close(box, against(f, 16), "one hot cell at row 1, column 2 of a 4x4 map, 16 px image", atol=1e-6)
    x0, y0, x1, y1 = box[0].tolist()
    expect(x0 < 0.75 <= x1 and y0 < 0.5 <= y1 and x1 <= 1 and y1 <= 1,
           f"the box {box[0].tolist()} must hold the hot cell (columns 8..11, rows 4..7 of 16)")
    expect(torch.as_tensor(fn(torch.ones(1, 3, 4, 4), 16))[0].tolist() == [0.0, 0.0, 1.0, 1.0],
           "a flat map (nothing above the threshold) gives the whole image (0, 0, 1, 1)")
    # seeded maps of several sizes, square and not, against the library
    g = torch.Generator().manual_seed(0)
    for b, c, h, w, size in ((3, 4, 4, 4, 64), (2, 8, 2, 2, 32), (4, 1, 4, 8, (64, 128)), (2, 16, 8, 8, 128)):
        f = torch.rand(b, c, h, w, generator=g) ** 4
        for thr in (0.1, 0.5):
            expect_close(torch.as_tensor(fn(f, size, thr)), against(f, size, thr),
                         f"seeded maps {(b, c, h, w)}, image {size}, threshold {thr}", atol=1e-6)
    expect_raises(ValueError, fn, torch.zeros(4, 4), 16, what="a 2-D map")


def _oracle_info_nce():
    def by_matrix(q, k, queue, temperature):
        # each query's own key stacked in front of the queue: (N, D, 1 + K), then one batched product
        keys = torch.cat([k[:, :, None], queue.detach().expand(len(q), *queue.shape)], 2)
        logits = torch.einsum("nd,ndk->nk", q, keys) / temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))

    return by_matrix


def _check_info_nce(fn, against):
    # known answer: D = 2, one query equal to its key, a queue of one orthogonal key, T = 1
    q = torch.tensor([[1.0, 0.0]])
    out = fn(q, q.clone(), torch.tensor([[0.0], [1.0]]), 1.0)
    expect(torch.is_tensor(out) and out.ndim == 0, "the loss is a scalar tensor")
    expect_close(out, torch.log1p(torch.exp(torch.tensor(-1.0))), "q = k = (1, 0), queue [(0, 1)], T = 1: "
                 "-log(e^1 / (e^1 + e^0))", rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    for n, d, kq, t in ((4, 8, 16, 0.2), (1, 3, 5, 1.0), (16, 32, 64, 0.07)):
        q = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(True)
        k = F.normalize(torch.randn(n, d, generator=g), dim=1)
        queue = F.normalize(torch.randn(d, kq, generator=g), dim=0).requires_grad_(True)
        out = fn(q, k, queue, t)
        expect_close(out, against(q, k, queue, t), f"seeded q ({n}, {d}), queue ({d}, {kq}), T = {t}",
                     rtol=1e-5, atol=1e-6)
        out.backward()
        expect(q.grad is not None and bool(q.grad.abs().sum() > 0), "gradients must reach the queries")
        expect(queue.grad is None or not bool(queue.grad.abs().sum() > 0), "no gradient may flow into the queue")
    # a query nearer its own key than the negatives has a lower loss
    q = F.normalize(torch.randn(8, 4, generator=g), dim=1)
    queue = F.normalize(torch.randn(4, 32, generator=g), dim=0)
    expect(float(fn(q, q, queue, 0.2)) < float(fn(q, -q, queue, 0.2)), "k = q must cost less than k = -q")
    expect_raises(ValueError, fn, q, q, queue, 0.0, what="temperature 0")
    expect_raises(ValueError, fn, q, q[:, :3], queue, 0.2, what="k of another width than q")


register_exercise("5.1", heatmap_box, check=_check_heatmap_box, oracle=_oracle_heatmap_box)
register_exercise("5.2", info_nce, check=_check_info_nce, oracle=_oracle_info_nce)
