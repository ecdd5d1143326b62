"""Paper B (chapter 4): Zhang, Jia, Chang, Ma, "Machine Perception-Driven (Facial) Image Compression: A Layered
Generative Approach", IEEE TCSVT (arXiv 2304.06896).

- ``faceworld.py``: :class:`FaceWorld`, seeded procedural faces with CelebAMask-HQ parsing labels, CelebA
  attributes and five landmarks (the ``faceworld`` dataset), and :func:`face_statistics` /
  :func:`dataset_statistics` for the chapter's calibration tables;
- ``celebamask.py``: :class:`CelebAMaskHQ`, the loader of the real CelebAMask-HQ layout for the paper profile
  (the ``celebamask_hq`` dataset, root in ``cfg.data_path``);
- ``model.py``: the ``zhang2023`` model (structure layer with a hyperprior, texture layer as a VAE code, an AdaIN
  generator, a conditional multi-scale PatchGAN, the GAN step through the trainer's ``train_step`` hook);
- ``codec.py``: :class:`Zhang2023Codec`, both layers in one container, structure-only decoding, texture swaps, and
  ``analyse`` (parsing, attributes, landmarks from the latents, never the generator);
- ``analysis.py``: the analysis network on the two decoded latents (``zhang2023_analysis``), the same trunk on RGB
  (``zhang2023_pixel``), the ``landmarks`` task and :func:`~.analysis.evaluate`;
- ``recipes.py``: the zoo's rate points, analysis networks, pixel baseline and ablations, and their metrics.
"""
from . import analysis, celebamask, codec, exercises, faceworld, model, recipes  # noqa: F401  (registration)
from .analysis import Zhang2023Analysis, Zhang2023Pixel
from .codec import Zhang2023Codec
from .model import FIDELITY, Zhang2023
from .celebamask import CELEBAMASK_LAYOUT, CelebAMaskHQ
from .faceworld import (
    ATTRIBUTE_KIND, ATTRIBUTES, CELEBAMASK_LABELS, FULL_TO_MERGED, LANDMARKS, MERGED_LABELS, FaceWorld,
    dataset_statistics, face_statistics,
)

__all__ = ["Zhang2023", "Zhang2023Codec", "Zhang2023Analysis", "Zhang2023Pixel", "FIDELITY",
           "FaceWorld", "CelebAMaskHQ", "CELEBAMASK_LAYOUT", "ATTRIBUTES", "ATTRIBUTE_KIND", "CELEBAMASK_LABELS",
           "MERGED_LABELS", "FULL_TO_MERGED", "LANDMARKS", "face_statistics", "dataset_statistics"]
