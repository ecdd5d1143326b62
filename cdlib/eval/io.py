"""Results files (strict JSON, written atomically) and a wall-clock timer.  ``results_dir`` lives in
:mod:`cdlib.paths` (re-exported here and from :mod:`cdlib.eval`)."""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch

from ..paths import atomic_write
from ..paths import results_dir  # noqa: F401  (re-exported)


def _jsonable(obj):
    if isinstance(obj, pd.DataFrame):
        return [_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _jsonable(np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_json(obj, **kw) -> str:
    """``obj`` as strict JSON text, with the conversions of :func:`save_json` (``kw`` go to ``json.dumps``)."""
    return json.dumps(_jsonable(obj), allow_nan=False, **kw)


def save_json(obj, path) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2), creating parent folders; atomic (temp + replace).

    DataFrames become lists of records, numpy/torch values become Python values, NaN and +-inf
    become ``null`` (strict JSON).  Returns the path.
    """
    text = json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def load_json(path):
    """Read a file written by :func:`save_json` (curves come back as lists of records:
    ``pd.DataFrame(obj["curve"])``)."""
    with open(path) as f:
        return json.load(f)


def time_call(fn: Callable, *args, repeat: int = 3, warmup: int = 1, **kwargs) -> float:
    """Median wall time in seconds of ``fn(*args, **kwargs)`` over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
