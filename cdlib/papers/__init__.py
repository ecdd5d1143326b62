"""One package per paper: ``cdlib/papers/<id>/`` holds everything that belongs to one paper (model and its
registration, codec and analysis, zoo recipes and their metrics, augmentation wiring, exercise reference
solutions).  :func:`cdlib.registry.load_papers` imports every subpackage; the core never imports one by name.
"""
