"""The exercise grader (see book/instructors.md).

``CDLIB_SOLUTIONS=path`` (a folder of ``chNN.py`` files, or one such file) grades a student's
functions against the reference solutions (``cdlib/exercises/`` for Part I, ``cdlib/papers/<id>/exercises.py``
for a paper's chapter); functions the student has not
written yet are skipped.  Without it, the reference solutions are graded, so that the book's CI keeps
them correct.  Every exercise is checked twice: on known answers worked out by hand (so a wrong
reference fails too) and against the reference on seeded random inputs.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

CHAPTERS = ("ch01", "ch02", "ch03")
# where each chapter's reference solutions live: Part I in cdlib/exercises/, a paper's in its package
REFERENCE = {"ch01": "cdlib.exercises.ch01", "ch02": "cdlib.exercises.ch02", "ch03": "cdlib.papers.bai2022.exercises"}


def _student_module(chapter: str):
    root = os.environ.get("CDLIB_SOLUTIONS", "").strip()
    if not root:
        return importlib.import_module(REFERENCE[chapter])
    path = Path(root)
    if path.is_dir():
        path = path / f"{chapter}.py"
    elif path.stem != chapter:
        return None
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"student_{chapter}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def student(chapter: str, name: str):
    """The student's function ``name`` of ``chapter``, or skip the test when it is not there yet."""
    mod = _student_module(chapter)
    fn = getattr(mod, name, None) if mod is not None else None
    if fn is None:
        pytest.skip(f"{chapter}.{name} not implemented yet")
    return fn


def _oracle(chapter: str, name: str):
    """An independent implementation of the same exercise (a library function where one exists), so that
    grading the reference solutions themselves compares them with something other than themselves."""
    if (chapter, name) == ("ch01", "bits_from_likelihoods"):
        from cdlib.losses import bpp_of_likelihoods

        return lambda lk, n: float(bpp_of_likelihoods(lk, n))
    if (chapter, name) == ("ch01", "quantize_ste"):
        from compressai.ops import quantize_ste

        return lambda y, m=None: quantize_ste(y) if m is None else quantize_ste(y - m) + m
    if (chapter, name) == ("ch01", "psnr_from_mse"):
        from skimage.metrics import peak_signal_noise_ratio

        # PSNR of an image whose every pixel is off by sqrt(mse)
        return lambda mse, peak=255.0: float(peak_signal_noise_ratio(
            np.zeros(4), np.full(4, math.sqrt(mse)), data_range=peak))
    if (chapter, name) == ("ch02", "min_rate_for_accuracy"):
        from cdlib.eval import min_rate_for_accuracy

        return min_rate_for_accuracy
    if (chapter, name) == ("ch03", "latent_to_tokens"):
        from einops import rearrange

        return lambda y: rearrange(y, "b c h w -> b (h w) c")
    if (chapter, name) == ("ch03", "step2_loss"):
        from cdlib.config import make_config
        from cdlib.registry import create_model

        model = create_model("bai2022", "laptop")

        def loss(ce, mse, bpp, alpha, beta):
            weights = model.loss_weights(make_config("bai2022", "laptop", lmbda=beta))
            assert weights["ce"] == pytest.approx(alpha), "the oracle holds for alpha = 100 * beta only"
            return weights["ce"] * ce + weights["mse"] * mse + weights["bpp"] * bpp

        return loss
    raise KeyError((chapter, name))


def reference(chapter: str, name: str):
    """What a student's function is compared with: the reference solution when grading students, else an
    independent oracle (so that the reference solutions are checked too)."""
    if os.environ.get("CDLIB_SOLUTIONS", "").strip():
        return getattr(importlib.import_module(REFERENCE[chapter]), name)
    return _oracle(chapter, name)


# ------------------------------------------------------------------------------------------------ chapter 1
def _likelihoods(seed):
    g = torch.Generator().manual_seed(seed)
    return {"y": torch.rand(2, 8, 4, 4, generator=g).clamp_min(1e-6), "z": torch.rand(2, 4, 1, 1, generator=g) * 0.5 + 0.5}


def test_ex1_1_bits_from_likelihoods():
    fn = student("ch01", "bits_from_likelihoods")
    # Known answer: 16 latents of probability 1/2 and 4 of probability 1/4 -> 24 bits over 8 pixels = 3 bpp.
    lk = {"y": torch.full((1, 4, 2, 2), 0.5), "z": torch.full((1, 4, 1, 1), 0.25)}
    assert fn(lk, 8) == pytest.approx(3.0, rel=1e-6)
    ref = reference("ch01", "bits_from_likelihoods")
    for seed in range(3):
        lk = _likelihoods(seed)
        assert float(fn(lk, 64 * 64)) == pytest.approx(ref(lk, 64 * 64), rel=1e-5)


def test_ex1_2_quantize_ste():
    fn = student("ch01", "quantize_ste")
    y = torch.tensor([-1.6, -0.4, 0.2, 0.6, 2.5], requires_grad=True)
    out = fn(y)
    assert torch.equal(out.detach(), torch.tensor([-2.0, -0.0, 0.0, 1.0, 2.0]))
    out.sum().backward()
    assert torch.equal(y.grad, torch.ones(5)), "the straight-through estimator passes gradients unchanged"
    means = torch.tensor([0.3, 0.3, 0.3, 0.3, 0.3])
    # round(y - mu) + mu: -1.6 -> -1.7, -0.4 -> -0.7, 0.2 -> 0.3, 0.6 -> 0.3, 2.5 -> 2.3
    assert torch.allclose(fn(y.detach(), means), torch.tensor([-1.7, -0.7, 0.3, 0.3, 2.3]), atol=1e-6)
    ref = reference("ch01", "quantize_ste")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 5, 5, generator=g) * 4
    m = torch.randn(2, 3, 5, 5, generator=g)
    assert torch.allclose(fn(y, m), ref(y, m), atol=1e-6)
    assert fn(y, m).shape == y.shape and fn(y, m).dtype == y.dtype


def test_ex1_3_psnr_from_mse():
    fn = student("ch01", "psnr_from_mse")
    assert fn(65.025) == pytest.approx(30.0, abs=1e-6)        # 255^2 / 65.025 = 1000
    assert fn(0.01, peak=1.0) == pytest.approx(20.0, abs=1e-9)
    assert math.isinf(fn(0.0))
    ref = reference("ch01", "psnr_from_mse")
    for mse in np.random.default_rng(0).uniform(0.1, 500, 5):
        assert fn(float(mse)) == pytest.approx(ref(float(mse)), rel=1e-9)


# ------------------------------------------------------------------------------------------------ chapter 2
def test_ex2_1_saving_vs_raw():
    fn = student("ch02", "saving_vs_raw")
    assert fn(2.4) == pytest.approx(0.9)
    assert fn(24.0) == pytest.approx(0.0)
    assert fn(1.0, raw_bpp=8.0) == pytest.approx(0.875)


def test_ex2_2_min_rate_for_accuracy():
    fn = student("ch02", "min_rate_for_accuracy")
    bpp = [0.1, 0.3, 0.2, 0.8]
    acc = [0.5, 0.9, 0.85, 0.95]
    assert fn(bpp, acc, 0.85) == pytest.approx(0.2)
    assert fn(bpp, acc, 0.9) == pytest.approx(0.3)
    assert math.isnan(fn(bpp, acc, 0.99))
    ref = reference("ch02", "min_rate_for_accuracy")
    rng = np.random.default_rng(1)
    b, a = rng.uniform(0, 2, 20), rng.uniform(0, 1, 20)
    for t in (0.2, 0.5, 0.8):
        assert fn(b, a, t) == pytest.approx(ref(b, a, t))


def test_ex2_3_info_bound_bpp():
    fn = student("ch02", "info_bound_bpp")
    assert fn(1024, 32, 32) == pytest.approx(10 / 1024)
    assert fn(10, 64, 64) == pytest.approx(math.log2(10) / 4096)
    assert fn(1, 64, 64) == 0.0


# ------------------------------------------------------------------------------------------------ chapter 3
def test_ex3_1_latent_to_tokens():
    fn = student("ch03", "latent_to_tokens")
    y = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    t = fn(y)
    assert t.shape == (2, 4, 3)
    # token k of image b is the channel vector at grid position (k // w, k % w)
    assert t[0, 1].tolist() == [1.0, 5.0, 9.0] and t[1, 2].tolist() == [14.0, 18.0, 22.0]
    ref = reference("ch03", "latent_to_tokens")
    y = torch.randn(3, 8, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fn(y), ref(y))
    with pytest.raises(ValueError):
        fn(torch.zeros(3, 4, 5))


def test_ex3_2_step2_loss():
    fn = student("ch03", "step2_loss")
    # q2 of the paper: alpha 0.3, beta 0.003; MSE 1e-3 on [0, 1] is 65.025 on 0..255
    assert float(fn(2.0, 1e-3, 0.5, 0.3, 0.003)) == pytest.approx(0.6 + 0.003 * 65.025 + 0.5)
    ref = reference("ch03", "step2_loss")
    ce, mse, bpp = torch.tensor(1.3, requires_grad=True), torch.tensor(0.004), torch.tensor(0.2)
    out = fn(ce, mse, bpp, 0.6, 0.006)
    assert torch.allclose(out, ref(ce, mse, bpp, 0.6, 0.006))
    out.backward()
    assert ce.grad.item() == pytest.approx(0.6)


def test_grader_finds_student_files(tmp_path, monkeypatch):
    """A partial student folder: written functions are graded, missing ones are skipped."""
    (tmp_path / "ch02.py").write_text("def saving_vs_raw(bpp, raw_bpp=24.0):\n    return 1 - bpp / raw_bpp\n")
    monkeypatch.setenv("CDLIB_SOLUTIONS", str(tmp_path))
    assert student("ch02", "saving_vs_raw")(12.0) == pytest.approx(0.5)
    with pytest.raises(pytest.skip.Exception):
        student("ch02", "info_bound_bpp")
    with pytest.raises(pytest.skip.Exception):
        student("ch01", "psnr_from_mse")
