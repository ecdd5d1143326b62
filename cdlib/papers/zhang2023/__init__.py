"""Paper B (chapter 4): Zhang, Jia, Chang, Ma, "Machine Perception-Driven (Facial) Image Compression: A Layered
Generative Approach", IEEE TCSVT (arXiv 2304.06896).

- ``faceworld.py``: :class:`FaceWorld`, seeded procedural faces with CelebAMask-HQ parsing labels, CelebA
  attributes and five landmarks (the ``faceworld`` dataset), and :func:`face_statistics` /
  :func:`dataset_statistics` for the chapter's calibration tables;
- ``celebamask.py``: :class:`CelebAMaskHQ`, the loader of the real CelebAMask-HQ layout for the paper profile
  (the ``celebamask_hq`` dataset, root in ``cfg.data_path``).
"""
from . import celebamask, faceworld  # noqa: F401  (registration)
from .celebamask import CELEBAMASK_LAYOUT, CelebAMaskHQ
from .faceworld import (
    ATTRIBUTE_KIND, ATTRIBUTES, CELEBAMASK_LABELS, FULL_TO_MERGED, LANDMARKS, MERGED_LABELS, FaceWorld,
    dataset_statistics, face_statistics,
)

__all__ = ["FaceWorld", "CelebAMaskHQ", "CELEBAMASK_LAYOUT", "ATTRIBUTES", "ATTRIBUTE_KIND", "CELEBAMASK_LABELS",
           "MERGED_LABELS", "FULL_TO_MERGED", "LANDMARKS", "face_statistics", "dataset_statistics"]
