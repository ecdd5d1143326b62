"""Block diagrams of models, drawn from the model itself.

A model describes its stages as a list of :class:`Block` (``model.diagram_blocks()``: which submodule each
block is, what it does, where it sits, what feeds it); :func:`model_diagram` runs the model once on a dummy
input with forward hooks on those submodules, so every block is labelled with the shape of the tensor that
it really produces, and draws the blocks and arrows with matplotlib.  The drawing therefore stays true to the
model: change a width or a stride and the diagram follows.  This module is core: it knows no paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from .plots import FIG_WIDTH, MIN_FONT_PT

# fill colour by kind of block
COLORS = {"input": "#ffffff", "transform": "#dbe9f6", "entropy": "#fde2c8", "task": "#dff0d8",
          "output": "#ffffff"}


@dataclass(frozen=True)
class Block:
    """One stage of a model diagram.

    ``key``: the dotted name of the submodule whose output shape labels the block (``"g_a"``,
    ``"blocks.3"``), ``"input"`` for the model's input, or ``None`` for no shape.  ``title`` (bold) and
    ``detail``: what the stage is.  ``pos``: ``(column, row)`` on the grid (row 0 at the top; fractions
    allowed).  ``inputs``: names (``key`` or ``name``) of the blocks that feed it, each an arrow, optionally
    ``(name, arrow label)``.  ``kind``: a key of :data:`COLORS`.  ``name``: the block's id when ``key`` is
    shared or ``None``.  ``pick``: which element of a tuple output is the tensor (entropy models return
    ``(y_hat, likelihoods)``).  ``out``: the name of the tensor, written before its shape (``"y"``).
    ``io``: ``"output"`` (default) or ``"input"``: label the block with what enters ``key`` instead
    (e.g. the tokens entering the first transformer block, class token included)."""

    key: str | None
    title: str
    pos: tuple[float, float]
    detail: str = ""
    inputs: tuple = ()
    kind: str = "transform"
    name: str | None = None
    pick: int = 0
    out: str = ""
    io: str = "output"

    @property
    def id(self) -> str:
        return self.name or self.key or self.title


def layer_summary(module) -> str:
    """A short description of a stack of convolutions, read from the module: one line per run of the same
    layer type (``"conv 3, 5/2, 5/2"``: kernel sizes, ``/s`` a stride, which upsamples in a ``deconv``, a
    transposed convolution; ``"4 conv 5/2"`` when all are alike), then ``GDN``/``IGDN`` if the stack uses them."""
    import torch.nn as nn

    runs: list[tuple[str, list[str]]] = []
    norms = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
            k, st = m.kernel_size[0], m.stride[0]
            item = f"{k}/{st}" if st > 1 else f"{k}"
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(item)
            else:
                runs.append((kind, [item]))
        elif type(m).__name__ == "GDN":
            name = "IGDN" if getattr(m, "inverse", False) else "GDN"
            if name not in norms:
                norms.append(name)
    lines = [f"{len(items)} {kind} {items[0]}" if len(items) > 1 and len(set(items)) == 1
             else f"{kind} {', '.join(items)}" for kind, items in runs]
    return "\n".join(lines + norms)


def _tensor(out, pick: int):
    while isinstance(out, (tuple, list)):
        out = out[pick if len(out) > pick else 0]
    if isinstance(out, Mapping):
        out = next(iter(out.values()))
    return out


def output_shapes(model, x, blocks: Sequence[Block], run: Callable | None = None) -> dict[str, tuple[int, ...]]:
    """Shape of the output of every block's submodule (its first call) when ``run(model, x)`` runs
    (default ``model(x)``), in eval mode and without gradients; ``"input"`` is ``x``'s shape.
    ``ValueError`` if a block's submodule does not exist or never runs."""
    import torch

    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for b in blocks:
        if b.key in (None, "input"):
            continue
        if b.key not in modules:
            raise ValueError(f"diagram block {b.title!r}: the model has no submodule {b.key!r}")

        def hook(_module, inp, out=None, b=b):
            if b.id not in shapes:
                t = _tensor(inp if b.io == "input" else out, b.pick)
                shapes[b.id] = tuple(int(s) for s in t.shape)

        if b.io == "input":
            handles.append(modules[b.key].register_forward_pre_hook(hook))
        else:
            handles.append(modules[b.key].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (run or (lambda m, inp: m(inp)))(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for b in blocks:
        if b.key == "input":
            shapes[b.id] = tuple(int(s) for s in x.shape)
        elif b.key is not None and b.id not in shapes:
            raise ValueError(f"diagram block {b.title!r}: submodule {b.key!r} did not run on the dummy input")
    return shapes


def shape_text(shape: Sequence[int], batch: bool = False) -> str:
    """``(1, 96, 16, 16)`` -> ``"96×16×16"`` (the batch dimension dropped unless ``batch``)."""
    dims = list(shape) if batch or len(shape) < 2 else list(shape)[1:]
    return "×".join(str(d) for d in dims)


def draw(blocks: Sequence[Block], shapes: Mapping[str, Sequence[int]] | None = None, title: str | None = None,
         width: float = FIG_WIDTH, row_height: float = 1.25, box_w: float = 0.92, box_h: float = 0.76):
    """Draw ``blocks`` as boxes on their grid with arrows from their inputs; the shape of each block's output
    (from ``shapes``, see :func:`output_shapes`) is its last line.  Returns the ``Figure``."""
    shapes = shapes or {}
    by_id = {b.id: b for b in blocks}
    cols = max(b.pos[0] for b in blocks) + 1
    rows = max(b.pos[1] for b in blocks) + 1
    n_lines = max(1 + len([d for d in b.detail.split("\n") if d]) + (b.id in shapes) for b in blocks)
    box_in = (n_lines + 0.6) * 0.19  # inches of box for that many 10-pt lines
    if box_in > box_h * row_height:  # taller rows, same gap between them
        row_height = box_in + (1 - box_h) * row_height
        box_h = box_in / row_height
    fig = plt.figure(figsize=(width, row_height * rows + (0.35 if title else 0.1)))
    ax = fig.add_axes((0, 0, 1, 1 if not title else 1 - 0.35 / fig.get_figheight()))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.axis("off")
    patches = {}
    for b in blocks:
        cx, cy = b.pos
        patch = FancyBboxPatch((cx - box_w / 2, cy - box_h / 2), box_w, box_h,
                               boxstyle="round,pad=0.0,rounding_size=0.06",
                               facecolor=COLORS.get(b.kind, "#eeeeee"),
                               edgecolor="none" if b.kind in ("input", "output") else "#4a4a4a",
                               linewidth=1.0)
        ax.add_patch(patch)
        patches[b.id] = patch
        lines = [(b.title, "bold")]
        if b.detail:
            lines += [(d, "normal") for d in b.detail.split("\n") if d]
        if b.id in shapes:
            lines.append((f"{b.out}: " * bool(b.out) + shape_text(shapes[b.id]), "shape"))
        step = box_h / (len(lines) + 0.6)
        for i, (text, style) in enumerate(lines):
            ax.text(cx, cy - box_h / 2 + step * (i + 0.8), text, ha="center", va="center", fontsize=MIN_FONT_PT,
                    fontweight="bold" if style == "bold" else "normal",
                    family="monospace" if style == "shape" else None,
                    color="#1f4e79" if style == "shape" else "k")
    for b in blocks:
        for inp in b.inputs:
            src, label = (inp, None) if isinstance(inp, str) else inp
            if src not in by_id:
                raise ValueError(f"diagram block {b.title!r}: unknown input {src!r}; blocks: {list(by_id)}")
            (x0, y0), (x1, y1) = by_id[src].pos, b.pos
            rad = 0.0 if (x0 == x1 or y0 == y1) else (0.25 if x1 > x0 else -0.25)
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", color="#333333", linewidth=1.2, mutation_scale=12,
                                        patchA=patches[src], patchB=patches[b.id], shrinkA=1, shrinkB=1,
                                        connectionstyle=f"arc3,rad={rad}"))
            if label:
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center", fontsize=MIN_FONT_PT,
                        style="italic", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))
    if title:
        fig.suptitle(title, fontsize=MIN_FONT_PT + 2)
    return fig


def model_diagram(model, x, blocks: Sequence[Block] | None = None, run: Callable | None = None,
                  title: str | None = None):
    """``(figure, shapes)``: the block diagram of ``model`` (``blocks``, default ``model.diagram_blocks()``)
    labelled with the output shapes of one run on ``x`` (see :func:`output_shapes`)."""
    if blocks is None:
        if not hasattr(model, "diagram_blocks"):
            raise ValueError(f"{type(model).__name__} has no diagram_blocks(); pass blocks=[Block(...), ...]")
        blocks = model.diagram_blocks()
    shapes = output_shapes(model, x, blocks, run=run)
    return draw(blocks, shapes, title=title), shapes
