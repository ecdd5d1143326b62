"""Paper C (chapter 5): Tang, Yi, Wang, "Towards Learned Image Compression for Multiple Semantic Analysis
Tasks", IEEE Transactions on Broadcasting, 2025 ("DICM").

- ``backbone.py``: the split ResNet (head = stem + layer1, tail = layer2..4) and MoCo's projection head;
- ``re.py``: the RE ("information filtering") module with Conv2Former blocks; its rate is a regulariser;
- ``compression.py``: the feature codec's transforms with HorNet gnConv blocks (orders 2, 3, 4 + FFT filter);
- ``entropy.py``: the Entroformer-style entropy model in CompressAI's hyperprior + checkerboard latent codecs;
- ``model.py``: the ``tang2025`` model (profiles ``paper`` and ``laptop``), its parameter table and fidelity
  table;
- ``codec.py``: :class:`Tang2025Codec`, real streams of the compressed features; decoding returns features.
"""
from . import codec, exercises, model, recipes, tasks  # noqa: F401  (registration)
from .codec import Tang2025Codec
from .model import FIDELITY, Tang2025

__all__ = ["FIDELITY", "Tang2025", "Tang2025Codec"]
