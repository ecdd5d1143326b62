"""Paper A (chapter 3): Bai et al., "Towards End-to-End Image Compression and Analysis with Transformers",
AAAI 2022.

- ``model.py``: the ``bai2022`` model (conv analysis transform, mean-scale hyperprior, a ViT on the
  quantised latent that classifies it and, through feature aggregation, feeds the pixel decoder);
- ``codec.py``: :class:`Bai2022Codec`, real streams plus ``analyse`` (classification without decoding);
- ``augment.py``: the model option ``augment`` ("timm" colour jitter of the laptop's step 2; "deit" for step 1 at paper
  scale), wired into the training loop through the model's data hooks;
- ``recipes.py``: step 1, the rate points and the ablations of the zoo;
- ``exercises.py``: reference solutions of chapter 3's autograded exercises (they register with
  ``cdlib.exercises`` on import).
"""
from . import codec, exercises, model, recipes  # noqa: F401  (registration)
from .codec import Bai2022Codec
from .model import Bai2022, PixelPath

__all__ = ["Bai2022", "Bai2022Codec", "PixelPath"]
