import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture
def toy_models():
    """Register the toy models of ``tests/toys.py`` for one test; unregister them afterwards."""
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import toys

    names = toys.register_toys()
    try:
        yield names
    finally:
        toys.unregister_toys(names)


@pytest.fixture
def empty_zoo(tmp_path, monkeypatch):
    """An empty zoo and cache for one test (``$CDLIB_ZOO``, ``$CDLIB_CACHE`` under ``tmp_path``)."""
    monkeypatch.setenv("CDLIB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path
