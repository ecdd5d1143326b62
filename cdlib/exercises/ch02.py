"""Chapter 2 exercises: reference solutions."""
from __future__ import annotations

import math

import numpy as np


def saving_vs_raw(bpp: float, raw_bpp: float = 24.0) -> float:
    """Exercise 2.1: fraction of bits saved against sending raw RGB (24 bpp)."""
    return 1.0 - bpp / raw_bpp


def min_rate_for_accuracy(bpp, accuracy, target: float) -> float:
    """Exercise 2.2: the smallest measured bpp whose accuracy reaches ``target`` (nan if none does)."""
    bpp, accuracy = np.asarray(bpp, float), np.asarray(accuracy, float)
    ok = accuracy >= target
    return float(bpp[ok].min()) if ok.any() else math.nan


def info_bound_bpp(num_classes: int, height: int, width: int) -> float:
    """Exercise 2.3: the fewest bits per pixel that can still name one of C classes."""
    return math.log2(num_classes) / (height * width)
