"""The zoo's recipes: what ``make checkpoints`` trains and how each entry is measured.

Every paper package registers its recipes (``papers/<id>/recipes.py``) with
:func:`cdlib.zoo.register_spec`; each entry is trained by the same loop as ``python -m cdlib train``
(the manifest records that command line), from a recorded config and seed, then evaluated on held-out
data with real bitstreams.  This module holds what the recipes share: the held-out test sets, and
:func:`load_recipe`, which chapters call to get a recipe's model (the shipped checkpoint, or trained).
"""
from __future__ import annotations

# ShapesWorld test set used for every accuracy number in the zoo.
SHAPES_TEST = dict(n=1000, image_size=64, seed=0)
PHOTO_MAX_SIDE = 256


def shapes_test():
    from .data import ShapesWorld

    return ShapesWorld("test", **SHAPES_TEST)


def photo_test_images():
    from .data import NaturalPhotos

    return NaturalPhotos.test_images(max_side=PHOTO_MAX_SIDE)


def load_recipe(entry_id: str, profile: str = "laptop", budget_steps: int | None = None, progress: bool = False,
                **extra):
    """``(model, info)`` of a zoo recipe: the shipped checkpoint when the zoo has it, else trained (and cached)
    by :func:`cdlib.zoo.load_or_train` with the recipe's config.

    ``profile="paper"``: the same recipe on the paper profile (its own step counts; pass ``data_path`` etc.
    in ``extra``), trained for ``budget_steps`` if given.  An ``init_from="@<id>"`` is resolved by loading
    that recipe first (step 1 before step 2), unless the zoo ships this recipe's entry.
    """
    from . import zoo

    specs = zoo.specs()
    spec = next((s for s in specs if s["id"] == entry_id), None)
    if spec is None:
        raise ValueError(f"unknown recipe {entry_id!r}; recipes: {', '.join(s['id'] for s in specs)}")
    # on another profile only the recipe's identity carries over (stage, rate point, arch ...), not the
    # laptop's step counts or CPU settings
    overrides = dict(spec["overrides"] if profile == spec["profile"] else spec["other_profiles"])
    arch = overrides.pop("arch", None)
    src = overrides.get("init_from", "")
    if src.startswith("@") and zoo.shipped_recipe_entry(spec, profile, **extra) is not None:
        src = ""  # shipped: its base is not needed (it may be a weightless record)
        overrides["init_from"] = ""
    if src.startswith("@"):
        _, info = load_recipe(src[1:], profile, budget_steps, progress, **extra)
        overrides["init_from"] = info["path"]
    return zoo.load_or_train(spec["model"], profile, budget_steps=budget_steps, arch=arch, progress=progress,
                             prefer=entry_id, **{**overrides, **extra})
