"""Image conversions shared by every codec and dataset, in one place.

Two representations meet here:

* **arrays**: ``numpy.uint8`` of shape ``(H, W, 3)`` (RGB) - what files, codecs and
  datasets store;
* **tensors**: ``float32`` in ``[0, 1]``, channels first - ``(3, H, W)`` for one dataset
  item, ``(B, 3, H, W)`` for a batch fed to a model.

Functions: :func:`load_image` (file -> array), :func:`resize` and :func:`fit_max_side`
(array -> array), :func:`as_rgb_uint8` (validate anything image-like as an array),
:func:`to_item_image` (array -> item tensor), :func:`to_tensor` / :func:`to_uint8`
(arrays <-> batch tensor) and :func:`pad_to` (pad a batch to a stride).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

# PIL warns for palette PNGs with a transparency entry; load_image drops alpha and says so itself.
warnings.filterwarnings("ignore", message=".*Palette images with Transparency.*")


# --------------------------------------------------------------------------------------------- files
def _bit_depth(im: Image.Image, wide: np.ndarray) -> tuple[int, bool]:
    """(bits per sample, known) of a wide integer image: ``I;16*`` modes are 16 bits, a TIFF says its own
    (BitsPerSample), a PNG holds at most 16; otherwise 16 when the values fit, else 32 (``known=False``)."""
    if im.mode.startswith("I;16"):
        return 16, True
    tags = getattr(im, "tag_v2", None)
    if tags is not None and tags.get(258):
        return int(max(tags[258])), True
    if im.format == "PNG":
        return 16, True
    return (16 if wide.max(initial=0) <= 65535 else 32), False


def load_image(path, return_note: bool = False):
    """Read an image file as uint8 RGB ``(H, W, 3)``.

    Grey images are replicated to three channels, alpha is dropped, 16-bit images are
    scaled to 8 bits by their bit depth (``v * 255 / 65535``, whatever their largest value: a dark
    16-bit image stays dark), EXIF orientation is applied, and of a multi-frame file (animated GIF,
    multi-page TIFF) only the first frame is read; ``return_note=True`` also returns a sentence
    saying which of these happened (or ``""``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            original, notes = im, []
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:  # Image.open sits on the first frame
                notes.append(f"{frames} frames in the file, only the first is used")
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(im, dtype=np.float64)
                bits, known = _bit_depth(original, wide)  # its tags, before any transpose
                full = float(2 ** bits - 1)
                wide = np.clip(wide / full * 255.0 + 0.5, 0, 255).astype(np.uint8)
                im = Image.fromarray(wide).convert("RGB")
                notes.append(f"{bits}-bit samples scaled to 8 bits" + ("" if known else " (bit depth assumed)"))
                mode = "L"
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                notes.append("alpha channel dropped")
            if mode in ("L", "1", "LA", "I", "F"):
                notes.append("grey image replicated to RGB")
            elif mode == "CMYK":
                notes.append("CMYK converted to RGB")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for unreadable or truncated files
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__}: {e}); "
                         f"supported: {', '.join(IMAGE_EXTENSIONS)}") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{path}: empty image")
    note = "; ".join(notes)
    return (arr, note) if return_note else arr


# --------------------------------------------------------------------------------------------- array -> array
def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> ``(size[0], size[1], 3)`` with Lanczos (area-correct downscaling).

    ``size`` is ``(height, width)``; an image already of that size is returned as is.
    """
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS))


def fit_max_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so that the longer side is at most ``max_side`` (aspect kept; never upscales)."""
    if not max_side:
        return img
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    return resize(img, (max(1, round(h * scale)), max(1, round(w * scale))))


def as_rgb_uint8(image) -> np.ndarray:
    """Validate or convert an image to a contiguous ``uint8 (H, W, 3)`` array; a clear error otherwise.

    Accepts such an array (or anything ``np.asarray`` turns into one) or a tensor
    ``(3, H, W)`` / ``(1, 3, H, W)`` in ``[0, 1]``, which is rounded to 8 bits.
    """
    if hasattr(image, "detach"):  # a torch tensor, channels first, in [0, 1]
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(t.shape)}")
        image = (t.clamp(0, 1) * 255).round().to(dtype=torch.uint8).permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8, got {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------------------------- array <-> tensor
def to_item_image(img: np.ndarray) -> torch.Tensor:
    """One image: uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in ``[0, 1]`` (a dataset item's ``"image"``)."""
    img = np.ascontiguousarray(img)
    if not img.flags.writeable:  # e.g. np.asarray(PIL image): torch wants writable memory
        img = img.copy()
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(255)


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """A batch: equal-sized uint8 ``(H, W, 3)`` arrays -> float32 ``(B, 3, H, W)`` in ``[0, 1]``."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A batch back: float ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)`` (clamped to [0, 1], rounded)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Replicate-pad ``(B, C, H, W)`` at the bottom and right to a multiple of ``multiple``.

    Returns ``(padded, pad_h, pad_w)``; replicate padding works for any image size
    (reflect padding would need the pad to be smaller than the image).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, ph, pw


__all__ = ["IMAGE_EXTENSIONS", "load_image", "resize", "fit_max_side", "as_rgb_uint8", "to_item_image", "to_tensor",
           "to_uint8", "pad_to"]
