"""Measuring codecs for machines: metrics, curves, tasks and Bjontegaard-delta (BD) numbers.

``from cdlib import eval as ev`` gives every public name of the sub-modules:

* :mod:`~cdlib.eval.metrics` - ``bpp_from_bytes``, ``psnr``, ``ms_ssim``, ``accuracy``, ``mean_ap``;
* :mod:`~cdlib.eval.tasks` - one interface for machine tasks (``Classification``, ``Detection``,
  ``InstanceSegmentation``, ``Parsing``, ``Attributes``; ``get_task``): run a pixel model, score its
  predictions, describe one prediction;
* :mod:`~cdlib.eval.curves` - ``rd_curve``, ``stream_report`` and rate-task curves of a pipeline
  (``task_curve`` of ``DecodeThenAnalyse(codec, model)`` or ``DecodeFree(codec)``; several pixel models
  behind one codec's decodes: ``decode_then_analyse_curves``), ``raw_rgb_point``;
* :mod:`~cdlib.eval.bd` - ``clean_curve``, ``bd_rate``, ``bd_quality``, ``bd_table``,
  ``min_rate_for_accuracy``, ``saving_vs_raw`` and the information bounds ``info_bound_bits`` / ``info_bound_bpp``;
* :mod:`~cdlib.eval.timing` - ``decode_free_timing``: decode-free analysis against decode-then-analyse, timed
  the same way for both (per stream, and batched);
* :mod:`~cdlib.eval.entropy` - what CompressAI's rANS coder does with its CDF tables and where real bytes
  part from the estimate (``from cdlib.eval import entropy``; its names are not re-exported here);
* :mod:`~cdlib.eval.io` - ``save_json``, ``load_json``, ``dumps_json``, ``time_call`` (and ``results_dir``, from
  :mod:`cdlib.paths`).

Conventions
-----------
* Images at the codec interface are ``uint8 (H, W, 3)`` numpy arrays; inside torch they are
  float ``(B, 3, H, W)`` in ``[0, 1]``.  Quality metrics take either.
* bpp counts the *whole* stream, container header included: ``8 * len(stream) / (H * W)``.
  Curves also report ``bpp_payload`` (header subtracted) so the container overhead is visible.
* Curves are :class:`pandas.DataFrame` objects with one row per codec quality setting.
* BD metrics come from the ``bjontegaard`` package (Akima interpolation by default).  Task curves
  (accuracy, mAP) are often *not* monotonic in rate; see :func:`clean_curve` for how that is handled.
* :func:`ms_ssim` raises for images with a side under 161 px rather than silently computing another
  metric (see :mod:`cdlib.eval.metrics`).
"""
from __future__ import annotations

from .bd import (MIN_BD_POINTS, MONOTONE_MODES, bd_quality, bd_rate, bd_table, clean_curve, info_bound_bits,
                 info_bound_bpp, min_rate_for_accuracy, saving_vs_raw)
from .curves import (TAIL_LIKELIHOOD, DecodeFree, DecodeThenAnalyse, decode_then_analyse_curves, raw_rgb_point,
                     rd_curve, stream_report, task_curve)
from .io import dumps_json, load_json, results_dir, save_json, time_call
from .metrics import MS_SSIM_MIN_SIDE, accuracy, bpp_from_bytes, mean_ap, ms_ssim, psnr
from .timing import decode_free_timing
from .tasks import (Attributes, Classification, Detection, InstanceSegmentation, Parsing, Task, get_task,
                    list_tasks, register_task)

__all__ = [
    # metrics
    "MS_SSIM_MIN_SIDE", "accuracy", "bpp_from_bytes", "mean_ap", "ms_ssim", "psnr",
    # tasks
    "Attributes", "Classification", "Detection", "InstanceSegmentation", "Parsing", "Task", "get_task",
    "list_tasks", "register_task",
    # curves and pipelines
    "TAIL_LIKELIHOOD", "DecodeFree", "DecodeThenAnalyse", "decode_then_analyse_curves", "raw_rgb_point", "rd_curve",
    "stream_report", "task_curve",
    # BD numbers and bounds
    "MIN_BD_POINTS", "MONOTONE_MODES", "bd_quality", "bd_rate", "bd_table", "clean_curve", "info_bound_bits",
    "info_bound_bpp", "min_rate_for_accuracy", "saving_vs_raw",
    # files and timing
    "decode_free_timing", "dumps_json", "load_json", "results_dir", "save_json", "time_call",
]
