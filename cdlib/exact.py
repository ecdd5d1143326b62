"""Bit-exact entropy parameters: the encoder computes them the way a one-stream decoder does.

A range decoder must see the very scale indices and means that the encoder used, or it goes astray.  Float
results of a convolution or a matrix product can depend on the batch size and on the number of threads, so
a hyper-synthesis run on a batch of 32 at encoding time may differ in the last bit from the same network
run on one stream at decoding time, flip a scale index and make the stream undecodable.  Inside
:func:`exact_inference` (which a model's ``compress`` and ``decompress`` enter), :func:`exactly` runs the
parameter path one image at a time on one thread.  The heavy transforms (``g_a``, ``g_s``) stay batched:
the encoder is the authority on ``y``, only the parameters have to agree.  A model that does this sets
``exact_entropy_parameters = True``, and :class:`cdlib.codecs.LearnedCodec` then encodes it in batches.
:func:`mean_scale_compress` and :func:`mean_scale_decompress` code the latent of a mean-scale hyperprior
(Minnen et al. 2018) this way, for every model built on one.

Encoder and decoder agree whatever their batch sizes and thread counts, on the same kind of machine
(decoding a CPU stream on a GPU is not supported).
"""
from __future__ import annotations

import contextlib
import threading

import torch

_STATE = threading.local()


@contextlib.contextmanager
def exact_inference():
    """Within this block :func:`exactly` computes image by image on one thread."""
    prev = getattr(_STATE, "on", False)
    _STATE.on = True
    try:
        yield
    finally:
        _STATE.on = prev


def exactly(fn, *tensors, **kw):
    """``fn(*tensors, **kw)``, or inside :func:`exact_inference` image by image on one thread (fresh,
    contiguous copies of each image), concatenated along the batch."""
    if not getattr(_STATE, "on", False):
        return fn(*tensors, **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outs = [fn(*(t[i:i + 1].clone(memory_format=torch.contiguous_format) for t in tensors), **kw)
                for i in range(tensors[0].shape[0])]
    finally:
        torch.set_num_threads(threads)
    return torch.cat(outs, 0)


def mean_scale_params(model, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scales, means)`` of ``model.h_s(z_hat)`` (scales first, as CompressAI's mean-scale hyperprior),
    computed stream by stream."""
    with exact_inference():
        scales, means = exactly(model.h_s, z_hat).chunk(2, 1)
    return scales, means


def mean_scale_compress(model, y: torch.Tensor) -> tuple[list, torch.Size]:
    """``([y_strings, z_strings], z grid)`` of a batch of latents ``y``, one rANS string per image in each.
    ``model`` holds CompressAI's pieces of a mean-scale hyperprior: ``h_a``, ``h_s``, ``entropy_bottleneck``
    (for ``z``) and ``gaussian_conditional`` (for ``y``)."""
    z = model.h_a(y)
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    scales, means = mean_scale_params(model, z_hat)
    indexes = model.gaussian_conditional.build_indexes(scales)
    return [model.gaussian_conditional.compress(y, indexes, means=means), z_strings], z.size()[-2:]


def mean_scale_decompress(model, strings, shape) -> torch.Tensor:
    """``y_hat`` from ``[y_strings, z_strings]`` and the z grid ``shape`` (:func:`mean_scale_compress`)."""
    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
    scales, means = mean_scale_params(model, z_hat)
    indexes = model.gaussian_conditional.build_indexes(scales)
    return model.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype, means)


__all__ = ["exact_inference", "exactly", "mean_scale_compress", "mean_scale_decompress", "mean_scale_params"]
