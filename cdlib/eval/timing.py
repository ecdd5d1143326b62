"""How much time decode-free analysis saves, timed the same way for both pipelines.

:func:`decode_free_timing` times, on the same streams, analysis from the stream (``codec.analyse``: no pixel
decoder) against decode-then-analyse (``codec.decode`` then a pixel model), twice:

* **per stream**: one stream at a time on both sides (``analyse([s])``; ``decode(s)``, then the pixel model on
  that one image): the latency of one request;
* **batched**: ``batch_size`` streams at a time on both sides (``analyse(chunk)``;
  ``decode_batch(chunk, batch_size=...)`` when the codec decodes in batches, then the pixel model on the chunk):
  throughput.

Comparing a batched analysis with a per-stream decode (or the reverse) would credit the pipeline with the
batching, not with skipping the decoder.
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, Sequence

import numpy as np

from .tasks import get_task

COLUMNS = ("decode-free (s)", "decode (s)", "pixel model (s)", "decode-then-analyse (s)", "time saved %")


def _decoder(codec, batch_size: int) -> Callable[[Sequence[bytes]], list]:
    """``codec.decode_batch`` in batches of ``batch_size`` when the codec supports it, else as it is."""
    try:
        batched = "batch_size" in inspect.signature(codec.decode_batch).parameters
    except (TypeError, ValueError):
        batched = False
    if batched:
        return lambda chunk: codec.decode_batch(chunk, batch_size=batch_size)
    return codec.decode_batch


def decode_free_timing(codec, model: Callable, streams: Sequence[bytes], task="classification",
                       batch_size: int = 64, repeat: int = 3, per_stream_limit: int | None = None):
    """Seconds to analyse ``streams`` decode-free and by decode-then-analyse, per stream and batched.

    ``codec``: a codec with ``tasks`` (its ``analyse`` never runs the pixel decoder); ``model``: the pixel model
    of ``task`` that decode-then-analyse runs on the decoded images.  Each time is the median over ``repeat``
    rounds (each round runs every path once, in turn, so that a slower moment of the machine hits all paths
    alike) of the total over all streams; ``per_stream_limit``: time the per-stream row on the first that many
    streams only and scale it to all of them (per-stream times add up; this keeps the measurement cheap).

    Returns a DataFrame with rows ``"per stream"`` and ``"batched"`` and columns :data:`COLUMNS`
    (``time saved %`` = 100 * (1 - decode-free / decode-then-analyse)); ``attrs`` holds ``n_streams``,
    ``batch_size``, ``per_stream_streams`` and ``repeat``.
    """
    import pandas as pd

    task = get_task(task)
    codec.check_task(task)
    streams = list(streams)
    if not streams:
        raise ValueError("decode_free_timing needs at least one stream")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(repeat) != repeat or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    batch_size = int(batch_size)
    decode = _decoder(codec, batch_size)
    one = streams if per_stream_limit is None else streams[:max(1, int(per_stream_limit))]
    scale = len(streams) / len(one)
    chunks = [streams[i:i + batch_size] for i in range(0, len(streams), batch_size)]

    def timed(fn, items) -> tuple[float, list]:
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        return time.perf_counter() - t0, out

    rounds = []
    for _ in range(int(repeat)):
        free_1, _ = timed(lambda s: codec.analyse([s], task), one)
        dec_1, images_1 = timed(lambda s: codec.decode(s)[None], one)
        model_1, _ = timed(lambda im: task.predict(model, im, 1), images_1)
        free_b, _ = timed(lambda c: codec.analyse(c, task), chunks)
        dec_b, images_b = timed(lambda c: np.stack(decode(c)), chunks)
        model_b, _ = timed(lambda ims: task.predict(model, ims, batch_size), images_b)
        rounds.append([scale * free_1, scale * dec_1, scale * model_1, free_b, dec_b, model_b])
    med = np.median(np.array(rounds), axis=0)
    rows = {"per stream": med[:3].tolist(), "batched": med[3:].tolist()}
    out = pd.DataFrame({k: v + [v[1] + v[2], 0.0] for k, v in rows.items()}, index=list(COLUMNS)).T
    out["time saved %"] = 100 * (1 - out["decode-free (s)"] / out["decode-then-analyse (s)"])
    out.attrs.update(n_streams=len(streams), batch_size=batch_size, per_stream_streams=len(one), repeat=int(repeat))
    return out
