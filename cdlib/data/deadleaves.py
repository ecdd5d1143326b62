"""Dead leaves: procedural images with natural-image statistics, for training image codecs offline.

The dead-leaves model (Matheron; Lee, Mumford & Huang, "Occlusion models for natural images", IJCV
2001) drops opaque shapes whose sizes follow a power law ``p(r) ~ r^-3`` on top of each other.  The
result is scale invariant, full of occlusion edges at every scale, and has the ``1/f^2`` power
spectrum of photographs; filled with photo textures and partly blurred (depth of field) it pre-trains
restoration networks nearly as well as photos (Achddou, Gousseau & Ladjal, "Synthetic images as a
regularity prior for image restoration neural networks", SSVM 2021; Baradad et al., "Learning to see
by looking at noise", NeurIPS 2021).

:func:`dead_leaves` renders one image front to back: each new leaf only paints pixels that no
nearer leaf covers yet, so the loop stops as soon as the canvas is covered.  Work is per leaf over its
bounding box (numpy), never per pixel.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Radii as a fraction of the image side: from about 4 px at 256 px to the whole image.  Smaller leaves
# add little but cost most of the time (the r^-3 law makes them the majority).
R_MIN, R_MAX = 0.015, 0.5
MAX_LEAVES = 800


def _power_law_radii(rng: np.random.Generator, n: int, rmin: float, rmax: float) -> np.ndarray:
    """``n`` radii with density proportional to ``r^-3`` on ``[rmin, rmax]`` (inverse CDF)."""
    u = rng.random(n)
    return 1.0 / np.sqrt(u / rmax**2 + (1 - u) / rmin**2)


def _leaf_fill(rng: np.random.Generator, h: int, w: int, textures: list[np.ndarray]) -> np.ndarray:
    """A ``(h, w, 3)`` float fill: a photo texture (rescaled, tinted) or a flat colour with a gradient."""
    if textures and rng.random() < 0.6:
        tex = textures[rng.integers(len(textures))]
        # a random window of the texture, nearest-neighbour resampled at a random zoom (0.5x .. 2x)
        zoom = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        th, tw = max(1, min(tex.shape[0], int(h / zoom) + 1)), max(1, min(tex.shape[1], int(w / zoom) + 1))
        y0, x0 = rng.integers(0, tex.shape[0] - th + 1), rng.integers(0, tex.shape[1] - tw + 1)
        ys = y0 + np.minimum((np.arange(h) * th) // h, th - 1)
        xs = x0 + np.minimum((np.arange(w) * tw) // w, tw - 1)
        fill = tex[ys][:, xs].astype(np.float32)
        gain = rng.uniform(0.7, 1.3, size=3).astype(np.float32)  # a colour cast: new colours from few photos
        return fill * gain + rng.uniform(-25, 25)
    if textures:  # a flat colour taken from a photo pixel: natural colours, not uniform RGB
        tex = textures[rng.integers(len(textures))]
        base = tex[rng.integers(tex.shape[0]), rng.integers(tex.shape[1])].astype(np.float32)
    else:
        base = rng.uniform(0, 255, size=3).astype(np.float32)
    gy, gx = rng.normal(0, 40, size=(2, 3)).astype(np.float32)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
    return base + yy * gy + xx * gx


def dead_leaves(rng: np.random.Generator, size: int, textures: list[np.ndarray] | None = None,
                blur_prob: float = 0.3) -> np.ndarray:
    """One ``size x size`` dead-leaves image, uint8 RGB.

    Leaves are discs, ellipses or rotated rectangles with soft (1-px) edges; ``textures`` (uint8 RGB
    arrays) fill 60% of them.  With probability ``blur_prob`` the leaves behind a random depth are
    blurred (a defocused background), and mild sensor noise is added.
    """
    textures = list(textures or [])
    canvas = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)  # coverage by nearer leaves, 0..1
    radii = _power_law_radii(rng, MAX_LEAVES, R_MIN * size, R_MAX * size)
    # front to back: the first leaves are nearest.  A defocus depth splits near (sharp) from far (blurred).
    blur_from = rng.integers(5, 60) if rng.random() < blur_prob else MAX_LEAVES
    far = np.zeros_like(canvas) if blur_from < MAX_LEAVES else None
    far_alpha = np.zeros_like(alpha) if far is not None else None
    for k, r in enumerate(radii):
        cy, cx = rng.uniform(-0.1, 1.1, size=2) * size
        kind = rng.integers(3)
        aspect = rng.uniform(0.3, 1.0) if kind else 1.0
        theta = rng.uniform(0, np.pi)
        y0, y1 = int(max(0, np.floor(cy - r))), int(min(size, np.ceil(cy + r) + 1))
        x0, x1 = int(max(0, np.floor(cx - r))), int(min(size, np.ceil(cx + r) + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / aspect
        if kind == 2:  # rectangle: distance to the edge of the box
            d = np.maximum(np.abs(u), np.abs(v)) - r * 0.8
        else:
            d = np.hypot(u, v) - r
        a = np.clip(0.5 - d, 0.0, 1.0)  # soft edge, about one pixel wide
        layer_canvas, layer_alpha = (canvas, alpha) if k < blur_from else (far, far_alpha)
        free = 1.0 - layer_alpha[y0:y1, x0:x1]
        paint = a * free
        if not paint.any():
            continue
        fill = _leaf_fill(rng, y1 - y0, x1 - x0, textures)
        layer_canvas[y0:y1, x0:x1] += paint[..., None] * fill
        layer_alpha[y0:y1, x0:x1] += paint
        if far is None and alpha.min() > 0.999:
            break
        if far is not None and far_alpha.min() > 0.999:
            break
    if far is not None:
        # what no far leaf covers is filled by one big background leaf, then the far layer is defocused
        far += (1.0 - far_alpha)[..., None] * _leaf_fill(rng, size, size, textures)
        sigma = rng.uniform(1.0, 3.0)
        far = gaussian_filter(far, sigma=(sigma, sigma, 0))
        canvas = canvas + (1.0 - alpha)[..., None] * far
    elif alpha.min() < 0.999:
        canvas += (1.0 - alpha)[..., None] * _leaf_fill(rng, size, size, textures)
    canvas += rng.normal(0, rng.uniform(0, 3), size=canvas.shape).astype(np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
