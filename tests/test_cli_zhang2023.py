"""python -m cdlib compress / decompress / analyze with paper B's codec (zhang2023): any image size, grey and
RGBA inputs, the analysis as JSON and the parsing map as PNG, one-line errors for corrupt streams and for
missing weights.  Tiny models saved to tmp files (the TINY arch of test_paper_zhang2023_model.py)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib import registry
from cdlib.checkpoint import atomic_save, training_checkpoint
from cdlib.cli import main
from cdlib.config import make_config
from cdlib.papers.zhang2023 import ATTRIBUTES, LANDMARKS, MERGED_LABELS
from cdlib.papers.zhang2023 import model as zm

TINY = dict(N=8, M=8, Nh=8, n_down=3, struct_ch=(8, 8, 8, 8), gen_ch=(8, 8, 8, 8), style_ch=4, style_levels=2,
            style_dim=4, disc_ch=4, disc_layers=2)


def _save(model, name, path):
    atomic_save(training_checkpoint(model, make_config(name, "laptop"), 0, {}, {}, None), path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny codec checkpoint, an analysis checkpoint whose codec is that codec, and another codec."""
    root = tmp_path_factory.mktemp("zhang2023_ckpts")
    torch.manual_seed(0)
    codec = registry.create_model("zhang2023", "laptop", **TINY)
    codec.update(force=True)
    torch.manual_seed(1)
    analysis = registry.create_model("zhang2023_analysis", "laptop", codec=dict(codec.arch), width=16, depth=1)
    analysis.load_state_dict(codec.state_dict(), strict=False)
    torch.manual_seed(2)
    other = registry.create_model("zhang2023", "laptop", **TINY)
    other.update(force=True)
    return {"codec": _save(codec, "zhang2023", root / "codec.pt"),
            "analysis": _save(analysis, "zhang2023_analysis", root / "analysis.pt"),
            "other": _save(other, "zhang2023", root / "other.pt")}


pytestmark = pytest.mark.usefixtures("empty_zoo")  # tests/conftest.py


@pytest.fixture
def rgba(tmp_path):
    path = tmp_path / "face rgba.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 50, 4), dtype=np.uint8), "RGBA").save(path)
    return path


@pytest.fixture
def grey(tmp_path):
    path = tmp_path / "grey.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (45, 33), dtype=np.uint8), "L").save(path)
    return path


def _no_pixel_decoding(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the pixel decoder or the generator ran")

    for name in ("decompress", "synthesize"):
        monkeypatch.setattr(zm.Zhang2023, name, boom)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _check_analysis(res, height, width, tasks=("parsing", "attributes", "landmarks")):
    assert res["codec"] == "zhang2023" and (res["height"], res["width"]) == (height, width)
    assert res["tasks"] == list(tasks)
    if "attributes" in tasks:
        attrs = res["attributes"]
        assert len(attrs) >= 17 and list(attrs) == list(ATTRIBUTES)
        for a in attrs.values():
            assert 0 <= a["probability"] <= 1 and a["decision"] == int(a["probability"] >= 0.5)
    if "landmarks" in tasks:
        lm = res["landmarks"]
        assert list(lm) == list(LANDMARKS) and len(lm) == 5
        for p in lm.values():  # pixels of the original image, not of the padded one nor [0, 1]
            assert 0 <= p["x"] <= width and 0 <= p["y"] <= height
    if "parsing" in tasks:
        parsing = res["parsing"]
        assert parsing["num_classes"] == len(MERGED_LABELS)
        assert parsing["legend"] == {str(i): n for i, n in enumerate(MERGED_LABELS)}
        assert set(parsing["fractions"]) <= set(MERGED_LABELS)
        assert abs(sum(parsing["fractions"].values()) - 1) < 1e-6


def test_rgba_50x37_compress_decompress_analyze(tmp_path, rgba, ckpts, monkeypatch, capsys):
    stream, out = tmp_path / "face.icm", tmp_path / "face.png"
    assert main(["compress", str(rgba), "--codec", "zhang2023", "--checkpoint", str(ckpts["codec"]),
                 "--quality", "0", "-o", str(stream)]) == 0
    cap = capsys.readouterr()
    assert "50x37" in cap.out and "alpha" in cap.err
    assert main(["decompress", str(stream), "--checkpoint", str(ckpts["codec"]), "-o", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (37, 50, 3)  # padded to 64x64 inside, cropped back
    capsys.readouterr()
    # analysis with the analysis network trained on that codec: the streams of the codec checkpoint are its own
    png, js = tmp_path / "maps" / "parsing.png", tmp_path / "face.json"
    png.parent.mkdir()
    _no_pixel_decoding(monkeypatch)
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--parsing-png", str(png),
                 "--json", str(js)]) == 0
    res = json.loads(capsys.readouterr().out)
    _check_analysis(res, 37, 50)
    assert json.loads(js.read_text()) == res and res["parsing_png"] == str(png)
    im = Image.open(png)
    assert im.format == "PNG" and im.mode == "P" and im.size == (50, 37)
    labels = np.asarray(im)
    assert labels.max() < len(MERGED_LABELS)
    present = {MERGED_LABELS[i] for i in np.unique(labels)}
    assert present == set(res["parsing"]["fractions"])
    # outputs are never overwritten without --force, and one task can be asked for
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--json", str(js)]) == 2
    _one_line_error(capsys, "exists", "--force")
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--task", "landmarks"]) == 0
    _check_analysis(json.loads(capsys.readouterr().out), 37, 50, ("landmarks",))


def test_grey_input_through_an_analysis_checkpoint(tmp_path, grey, ckpts, capsys):
    """An analysis checkpoint is also a codec checkpoint (its codec part): compress, decompress and analyse."""
    stream = tmp_path / "grey.icm"
    assert main(["compress", str(grey), "--codec", "zhang2023", "--checkpoint", str(ckpts["analysis"]),
                 "-o", str(stream)]) == 0
    assert "grey" in capsys.readouterr().err
    assert main(["decompress", str(stream), "--checkpoint", str(ckpts["analysis"]), "-o",
                 str(tmp_path / "g.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (45, 33, 3)
    capsys.readouterr()
    png = tmp_path / "g_parsing.png"
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--task", "attributes,landmarks",
                 "--parsing-png", str(png)]) == 0
    _check_analysis(json.loads(capsys.readouterr().out), 45, 33, ("attributes", "landmarks"))
    assert Image.open(png).size == (33, 45)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_streams_give_one_line_errors(tmp_path, rgba, ckpts, capsys, damage):
    stream = tmp_path / "s.icm"
    assert main(["compress", str(rgba), "--codec", "zhang2023", "--checkpoint", str(ckpts["codec"]),
                 "-o", str(stream)]) == 0
    data = bytearray(stream.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 5]
    elif damage == "flip":
        data[-3] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"hello world, not a stream at all")
    else:
        data = bytearray()
    stream.write_bytes(bytes(data))
    capsys.readouterr()
    out, png, js = tmp_path / "out.png", tmp_path / "p.png", tmp_path / "p.json"
    assert main(["decompress", str(stream), "--checkpoint", str(ckpts["codec"]), "-o", str(out)]) == 2
    _one_line_error(capsys)
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--parsing-png", str(png),
                 "--json", str(js)]) == 2
    _one_line_error(capsys)
    assert not out.exists() and not png.exists() and not js.exists()


def test_wrong_weights_and_wrong_requests(tmp_path, rgba, ckpts, capsys):
    stream = tmp_path / "s.icm"
    assert main(["compress", str(rgba), "--codec", "zhang2023", "--checkpoint", str(ckpts["codec"]),
                 "-o", str(stream)]) == 0
    capsys.readouterr()
    # another codec's weights: refused, naming the remedy
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["other"])]) == 2
    _one_line_error(capsys, "checkpoint")
    # a codec without an analysis network
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["codec"])]) == 2
    _one_line_error(capsys, "no analysis network", "zhang2023_analysis")
    # a checkpoint of another model
    torch.manual_seed(0)
    hp = registry.create_model("hyperprior", "laptop", N=8, M=8)
    _save(hp, "hyperprior", tmp_path / "hp.pt")
    assert main(["compress", str(rgba), "--codec", "zhang2023", "--checkpoint", str(tmp_path / "hp.pt"),
                 "-o", str(tmp_path / "x.icm")]) == 2
    _one_line_error(capsys, "'hyperprior'", "zhang2023_analysis")
    # a task the codec does not analyse, a parsing map of a codec without one, a non-PNG map
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--task", "classification"]) == 2
    _one_line_error(capsys, "analyses only")
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["analysis"]), "--parsing-png",
                 str(tmp_path / "p.jpg")]) == 2
    _one_line_error(capsys, "PNG")
    jpeg = tmp_path / "j.icm"
    assert main(["compress", str(rgba), "--codec", "jpeg", "--quality", "50", "-o", str(jpeg)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(jpeg), "--parsing-png", str(tmp_path / "j.png")]) == 2
    _one_line_error(capsys, "no analysis head")


def test_missing_zoo_then_the_zoo_rate_points(tmp_path, rgba, ckpts, capsys):
    from cdlib import zoo

    stream = tmp_path / "s.icm"
    assert main(["compress", str(rgba), "--codec", "zhang2023", "--checkpoint", str(ckpts["codec"]),
                 "-o", str(stream)]) == 0
    capsys.readouterr()
    # an empty zoo: every command says to pass --checkpoint or to build the zoo
    assert main(["analyze", str(stream)]) == 2
    _one_line_error(capsys, "--checkpoint", "make checkpoints")
    assert main(["decompress", str(stream), "-o", str(tmp_path / "d.png")]) == 2
    _one_line_error(capsys, "--checkpoint", "make checkpoints")
    assert main(["compress", str(rgba), "--codec", "zhang2023", "-o", str(tmp_path / "z.icm")]) == 2
    _one_line_error(capsys, "--checkpoint", "make checkpoints")
    # a zoo with the codec's rate point but no analysis network: the codec works, the analysis says what lacks
    zoo.add_entry(ckpts["codec"], "zhang2023_q1", {}, 0.0)
    assert main(["compress", str(rgba), "--codec", "zhang2023", "-o", str(tmp_path / "z.icm")]) == 0
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "z.icm")]) == 2
    _one_line_error(capsys, "zhang2023_analysis_q1", "make checkpoints")
    # ... and with it (its codec shared with the rate point's): the zoo's stream is analysed
    zoo.add_entry(ckpts["analysis"], "zhang2023_analysis_q1", {}, 0.0, base="zhang2023_q1", base_prefix="codec.")
    assert main(["analyze", str(tmp_path / "z.icm")]) == 0
    _check_analysis(json.loads(capsys.readouterr().out), 37, 50)
