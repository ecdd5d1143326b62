"""Part I (chapters 1 and 2): the learned baselines and the pixel-domain classifier.

- ``models.py``: ``factorized`` (Balle et al. 2017) and ``hyperprior`` (Minnen et al. 2018, mean-scale, no
  context), thin subclasses of CompressAI's reference models;
- ``classifier.py``: ``pixel_classifier``, a timm classifier from scratch for decode-then-analyse curves;
- ``codec.py``: both baselines as codecs (``get_codec("hyperprior")``);
- ``recipes.py``: the zoo entries of chapters 1-2 and their metric functions.
"""
from . import classifier, codec, models, recipes  # noqa: F401  (registration)
