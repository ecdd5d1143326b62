"""Model files; importing this package registers every model."""
from importlib import import_module

for _name in ("baselines", "classifier", "bai2022"):
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # a model file not written yet
        if exc.name != f"{__name__}.{_name}":
            raise
