"""Bit-exact entropy parameters: the encoder computes them the way a one-stream decoder does.

A range decoder must see the very scale indices and means that the encoder used, or it goes astray.  Float
results of a convolution or a matrix product can depend on the batch size and on the number of threads, so
a hyper-synthesis run on a batch of 32 at encoding time may differ in the last bit from the same network
run on one stream at decoding time, flip a scale index and make the stream undecodable.  Inside
:func:`exact_inference` (which a model's ``compress`` and ``decompress`` enter), :func:`exactly` runs the
parameter path one image at a time on one thread.  The heavy transforms (``g_a``, ``g_s``) stay batched:
the encoder is the authority on ``y``, only the parameters have to agree.  A model that does this sets
``exact_entropy_parameters = True``, and :class:`cdlib.codecs.LearnedCodec` then encodes it in batches.

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


__all__ = ["exact_inference", "exactly"]
