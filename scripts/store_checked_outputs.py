#!/usr/bin/env python3
"""Store the expected outputs of the ``# NBVAL_CHECK_OUTPUT`` cells in ``notebooks/<chapter>.ipynb``.

    python scripts/store_checked_outputs.py results/laptop/ch01/ch01_learned_compression.ipynb ...

Each argument is an executed copy of a chapter (``make reproduce CHAPTER=...`` writes one to
``results/laptop/<chNN>/``).  The outputs of its marked cells (seeded, rounded key numbers, printed as text) are
copied into the committed notebook; every other cell stays without outputs.  ``make test`` then runs nbval,
which compares those cells' fresh outputs with the stored ones.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for p in paths:
        executed = nbformat.read(p, as_version=4)
        target = ROOT / "notebooks" / Path(p).name
        nb = nbformat.read(target, as_version=4)
        done = 0
        marked = [c for c in executed.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
        for cell in nb.cells:
            if cell.cell_type != "code" or "NBVAL_CHECK_OUTPUT" not in cell.source:
                continue
            src = next((c for c in marked if c.source == cell.source), None)
            if src is None:
                print(f"error: {p} has no executed cell matching {cell.source[:60]!r}", file=sys.stderr)
                return 1
            streams = [o for o in src.outputs if o.output_type == "stream" and o.name == "stdout"]
            if len(streams) != 1:
                print(f"error: marked cells must print text only ({cell.source[:60]!r})", file=sys.stderr)
                return 1
            cell.outputs, cell.execution_count = streams, 1  # nbval refuses outputs of an "unrun" cell
            done += 1
        nbformat.write(nb, target)
        print(f"{target.relative_to(ROOT)}: stored {done} checked output(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
