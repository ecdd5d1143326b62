"""cdlib.plots (figures rendered for the book: PNG metadata, smallest font, legibility) and cdlib.diagrams
(block diagrams whose shapes come from a run of the model)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import cdlib  # noqa: E402
from cdlib import diagrams, plots  # noqa: E402

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("ch*.md"))


@pytest.fixture(autouse=True)
def _style():
    plots.set_style()
    yield
    plt.close("all")


def _curves(labels=("JPEG", "HEVC")):
    rows = []
    for k, label in enumerate(labels):
        for i, bpp in enumerate((0.2, 0.5, 1.0, 2.0)):
            rows.append({"label": label, "bpp": bpp * (1 + 0.1 * k), "psnr": 25 + 3 * i - k,
                         "ms_ssim": 0.8 + 0.04 * i, "accuracy": 0.3 + 0.15 * i})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- PNG metadata and smallest font


def test_figure_png_carries_min_font_px():
    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xlabel("x", fontsize=20)
    ax.set_title("title", fontsize=16)
    ax.tick_params(labelsize=12)
    ax.legend(fontsize=14, title="legend", title_fontsize=18)
    ax.annotate("note", (0.5, 0.5), fontsize=11)
    png, px = plots.figure_png(fig, dpi=100)
    assert px == pytest.approx(11 * 100 / 72)  # the annotation is the smallest text
    assert plots.png_min_font_px(png) == pytest.approx(px, abs=0.01)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (400, 300)  # natural size: figsize x dpi, not cropped
        assert float(im.text[plots.PNG_FONT_KEY]) == pytest.approx(px, abs=0.01)
        assert "Software" in im.text  # matplotlib's own chunk is kept


def test_min_font_px_scales_with_dpi_and_ignores_hidden_text():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.tick_params(labelsize=12)
    ax.text(0.5, 0.5, "hidden", fontsize=4, visible=False)
    ax.text(0.5, 0.5, "   ", fontsize=5)  # blank: not drawn
    assert plots.min_font_px(fig, dpi=72) == pytest.approx(12)
    assert plots.min_font_px(fig, dpi=144) == pytest.approx(24)
    ax.axis("off")  # tick labels no longer drawn
    ax.set_title("t", fontsize=15)
    assert plots.min_font_px(fig, dpi=72) == pytest.approx(15)


def test_figure_without_text_writes_inf():
    fig = plt.figure(figsize=(1, 1))
    png, px = plots.figure_png(fig)
    assert px == float("inf") and plots.png_min_font_px(png) == float("inf")


def test_png_without_the_chunk_is_an_error():
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="min_font_px"):
        plots.png_min_font_px(buf.getvalue())


def test_show_closes_the_figure_and_checks_names(monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plots.show(fig, "fig-test", caption="a caption")  # outside IPython: renders, closes, displays nothing
    assert not plt.fignum_exists(fig.number)
    with pytest.raises(ValueError, match="figure name"):
        plots.show(plt.figure(), "bad name")
    fig, ax = plt.subplots()
    ax.text(0, 0, "tiny", fontsize=5)
    with pytest.warns(UserWarning, match="smallest text"):
        plots.show(fig, "fig-tiny")


def test_book_figures_are_legible():
    """Every figure function at its default size: the PNG fits the main column and no text is under 10 px."""
    df = _curves()
    hist = pd.DataFrame({"step": np.arange(10), "mse": np.linspace(1, 0.1, 10), "bpp": np.linspace(2, 0.5, 10),
                         "model": ["a"] * 5 + ["b"] * 5})
    figs = {
        "rd": plots.rd_plot(df),
        "panels": plots.rd_panels(df),
        "rate_accuracy": plots.rate_accuracy_plot(df, bound_bpp=0.0008, raw_point={"bpp": 24.0, "accuracy": 0.9}),
        "grid": plots.image_grid([np.zeros((8, 8, 3), np.uint8)] * 4, titles=["a\nb"] * 4, ncols=4),
        "loss": plots.loss_plot(hist, terms=["mse", "bpp"], hue="model", switch_step=5),
        "bars": plots.bar_table(pd.DataFrame({"variant": ["a", "b"], "psnr": [24.1, 25.3]}), x="psnr", y="variant",
                                zero=False),
        "diagram": diagrams.model_diagram(cdlib.create_model("hyperprior", profile="laptop"),
                                          torch.rand(1, 3, 128, 128))[0],
    }
    for name, fig in figs.items():
        png, px = plots.figure_png(fig)
        with Image.open(io.BytesIO(png)) as im:
            assert im.size[0] <= 800, (name, im.size)
        assert px >= plots.MIN_FONT_PX, (name, px)


# --------------------------------------------------------------------------- figure contents


def test_rate_accuracy_annotates_an_off_axis_bound_without_widening_the_axis():
    df = _curves()
    fig = plots.rate_accuracy_plot(df, bound_bpp=0.0008, raw_point={"bpp": 24.0, "accuracy": 0.9})
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo > 0.0008 * 10 and hi >= 24  # the data and the raw point set the range, not the bound
    notes = [t for t in ax.texts if t.get_gid() == "information-bound"]
    assert len(notes) == 1 and plots.BOUND_LABEL in notes[0].get_text() and "0.0008" in notes[0].get_text()
    assert ax.get_legend().get_title().get_text() == "codec"
    # a bound inside the data range is a line in the legend
    fig = plots.rate_accuracy_plot(df, bound_bpp=0.5)
    assert plots.BOUND_LABEL in fig.axes[0].get_legend_handles_labels()[1]


def test_legend_titles_mean_something():
    df = _curves()
    assert plots.rd_plot(df).axes[0].get_legend().get_title().get_text() == "codec"
    fig = plots.rd_panels(df.rename(columns={"label": "variant"}), hue="variant", legend_title="decoder input")
    assert [lg.get_title().get_text() for lg in fig.legends] == ["decoder input"]
    assert len(fig.axes) == 2 and all(ax.get_legend() is None for ax in fig.axes)


def test_bar_table_can_leave_zero_out():
    table = pd.DataFrame({"variant": ["a", "b", "c"], "psnr": [24.0, 25.0, 26.0]})
    lo, hi = plots.bar_table(table, x="psnr", y="variant", zero=False).axes[0].get_xlim()
    assert 20 < lo < 24 and hi > 26
    lo, _ = plots.bar_table(table, x="psnr", y="variant").axes[0].get_xlim()
    assert lo <= 0
    _, hi = plots.bar_table(table, x="variant", y="psnr", zero=False).axes[0].get_xlim()  # vertical bars
    lo, _ = plots.bar_table(table, x="variant", y="psnr", zero=False).axes[0].get_ylim()
    assert lo > 20


def test_loss_plot_marks_the_switch_of_training_step():
    hist = [{"step": i, "ce": 1.0 / (i + 1), "bpp": 0.5 + i} for i in range(10)]
    fig = plots.loss_plot(hist, switch_step=5, switch_label="step 2 starts")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert any(list(line.get_xdata()) == [5, 5] for line in ax.get_lines())
    assert any("step 2 starts" in t.get_text() for t in fig.axes[0].texts)


# --------------------------------------------------------------------------- diagrams


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize("name, profile, size", [("hyperprior", "laptop", 256), ("bai2022", "laptop", 64)])
def test_model_diagram_shapes_match_the_model(name, profile, size):
    torch.manual_seed(0)
    model = cdlib.create_model(name, profile=profile)
    x = torch.rand(1, 3, size, size)
    fig, shapes = diagrams.model_diagram(model, x)
    with torch.no_grad():
        y = model.g_a(x)
        z = model.h_a(y)
        x_hat = model.eval()(x)["x_hat"]
    assert shapes["input"] == tuple(x.shape)
    assert shapes["g_a"] == tuple(y.shape)
    assert shapes["h_a"] == shapes["entropy_bottleneck"] == tuple(z.shape)
    assert shapes["h_s"] == (1, 2 * y.shape[1], *y.shape[2:])
    assert shapes["gaussian_conditional"] == tuple(y.shape)
    assert shapes["g_s"] == tuple(x_hat.shape)
    text = "\n".join(_texts(fig))
    for block in model.diagram_blocks():  # every block drawn, labelled with its measured shape
        assert block.title in text
        if block.id in shapes:
            assert diagrams.shape_text(shapes[block.id]) in text
    if name == "bai2022":
        grid = size // 16
        assert shapes["tokens"] == shapes["transformer"] == (1, 1 + grid * grid, model.D)
        assert shapes["head"] == (1, model.head.out_features)
        assert shapes["aggregation"] == (1, model.D, grid, grid)
    assert plots.min_font_px(fig) >= plots.MIN_FONT_PX


@pytest.mark.parametrize("arch", [{"patchify": True}, {"agg_blocks": "last"}])
def test_bai2022_ablation_diagrams_follow_the_wiring(arch):
    model = cdlib.create_model("bai2022", profile="laptop", **arch)
    fig, shapes = diagrams.model_diagram(model, torch.rand(1, 3, 64, 64))
    text = "\n".join(_texts(fig))
    if arch.get("patchify"):
        assert "patches" in text and "aggregation" not in text
        assert shapes["g_s"] == (1, 3, 64, 64) and shapes["tokens"] == (1, 17, model.D)
    else:
        assert "last block" in text and shapes["aggregation"] == (1, model.D, 4, 4)


def test_layer_summary_reads_the_layers():
    hp = cdlib.create_model("hyperprior", profile="laptop")
    assert diagrams.layer_summary(hp.g_a) == "4 conv 5/2\nGDN"
    assert diagrams.layer_summary(hp.h_a) == "conv 3, 5/2, 5/2"
    assert diagrams.layer_summary(hp.h_s) == "2 deconv 5/2\nconv 3"
    assert diagrams.layer_summary(hp.g_s) == "4 deconv 5/2\nIGDN"
    bai = cdlib.create_model("bai2022", profile="laptop")
    assert diagrams.layer_summary(bai.h_a) == "conv 1, 2/2, 1"  # the laptop's local hyperprior


def test_diagram_text_stays_inside_its_boxes():
    """Labels are sized for the main column: no text of a block spills out of its box."""
    for name, size, arch in (("hyperprior", 256, {}), ("bai2022", 64, {}), ("bai2022", 64, {"patchify": True}),
                             ("hyperprior", 256, {"N": 128, "M": 192})):
        model = cdlib.create_model(name, profile="laptop", **arch)
        fig, _ = diagrams.model_diagram(model, torch.rand(1, 3, size, size))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        boxes = [p.get_window_extent(renderer) for p in ax.patches]
        for t in ax.texts:
            if not t.get_text() or t.get_bbox_patch() is not None:
                continue
            tb = t.get_window_extent(renderer)
            cx, cy = (tb.x0 + tb.x1) / 2, (tb.y0 + tb.y1) / 2
            box = next((b for b in boxes if b.x0 <= cx <= b.x1 and b.y0 <= cy <= b.y1), None)
            if box is None:  # a label outside every box (input/output tensors have no visible frame)
                continue
            assert box.x0 - 1 <= tb.x0 and tb.x1 <= box.x1 + 1, (name, t.get_text())


def test_diagram_errors_name_the_block():
    model = cdlib.create_model("hyperprior", profile="laptop")
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        diagrams.model_diagram(model, torch.rand(1, 3, 64, 64), blocks=[diagrams.Block("nope", "Nope", (0, 0))])
    with pytest.raises(ValueError, match="unknown input"):
        diagrams.draw([diagrams.Block("g_a", "g_a", (0, 0), inputs=("missing",))])
    with pytest.raises(ValueError, match="diagram_blocks"):
        diagrams.model_diagram(torch.nn.Linear(2, 2), torch.rand(1, 2))


# --------------------------------------------------------------------------- the chapters use them


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_show_every_figure_as_a_numbered_glued_png(path):
    text = path.read_text()
    body = text.split("\n## Exercises", 1)[0]
    assert "plt.show()" not in body, f"{path.name}: figures go through cdlib.plots.show"
    names = re.findall(r"plots\.show\(\s*[^,]+,\s*\"(fig-[\w-]+)\"", body)
    assert names, f"{path.name} shows no figure with plots.show"
    assert len(names) == len(set(names)), f"{path.name}: duplicate figure names {names}"
    for name in names:
        directive = re.search(r"```\{glue:figure\} " + re.escape(name) + r"\n(?::[^\n]*\n)*", body)
        assert directive, f"{path.name}: no {{glue:figure}} {name} directive"
        assert f":name: {name}" in directive.group(0), f"{path.name}: {name} needs :name: (numbered caption)"
    for cell in re.findall(r"```\{code-cell\} ipython3\n(.*?)```", body, flags=re.S):
        if "plots.show(" in cell:
            assert re.match(r":tags: \[[^\]]*remove-output", cell), \
                f"{path.name}: a cell calling plots.show needs the remove-output tag (else the book shows it twice)"


CODE_LINE_LIMIT = 88  # characters of a code line that fit the book's main column without a scroll bar


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_lines_fit_the_page(path):
    """Code the book shows (cells outside the Exercises, whose stubs students edit; ``remove-input`` cells are
    never shown) wraps at CODE_LINE_LIMIT characters.  A Markdown table built in code wraps by building it
    from a list of rows (chapter 1's Fidelity notes)."""
    body = path.read_text().split("\n## Exercises", 1)[0]
    long = [f"{path.name}: {len(line)} chars: {line.strip()[:60]}"
            for cell in re.findall(r"```\{code-cell\} ipython3\n(.*?)\n```", body, flags=re.S)
            if not re.match(r":tags: \[[^\]]*remove-input", cell)
            for line in cell.split("\n") if len(line) > CODE_LINE_LIMIT]
    assert not long, "\n".join(long)
