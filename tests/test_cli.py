"""python -m cdlib: compress / decompress / analyze / train / eval, and one-line errors for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib.cli import main
from cdlib.codecs import base


class ToyHeadCodec(base.Codec):
    """Stores the pixels raw; classifies a stream into 10 brightness bins straight from the payload."""

    name = "toyheads"
    label = "toy codec with an analysis head"
    qualities = (1,)
    tasks = ("classification",)

    def __init__(self, **kw):
        self.kw = kw

    def _encode(self, image, quality):
        return [image.tobytes()], 0, 0

    def _decode(self, strings, header):
        return np.frombuffer(strings[0], np.uint8).reshape(header.height, header.width, 3)

    def analyse(self, streams, task):
        self.check_task(task)
        out = []
        for s in streams:
            mean = np.frombuffer(base.unpack(s)[1][0], np.uint8).mean()
            out.append(-(torch.arange(10.0) - int(mean // 25.6)).abs())
        return torch.stack(out)


@pytest.fixture
def toy_codec(monkeypatch):
    monkeypatch.setitem(base._CODECS, ToyHeadCodec.name, ToyHeadCodec)
    return ToyHeadCodec


def _no_pixel_decoding(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the pixel decoder ran")

    for name in ("decode", "decode_batch", "_decode"):
        monkeypatch.setattr(ToyHeadCodec, name, boom)


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((37, 53, 3)) * 12 + np.linspace(0, 180, 53)[None, :, None]).astype(np.uint8)
    path = tmp_path / "odd size.png"
    Image.fromarray(arr).save(path)
    return path, arr


def test_compress_decompress_roundtrip(tmp_path, image, capsys):
    path, arr = image
    for codec, q in (("jpeg", "90"), ("hevc", "22"), ("webp", "95")):
        stream, out = tmp_path / f"{codec}.icm", tmp_path / f"{codec}.png"
        assert main(["compress", str(path), "--codec", codec, "--quality", q, "-o", str(stream)]) == 0
        assert "bpp" in capsys.readouterr().out
        assert main(["decompress", str(stream), "-o", str(out)]) == 0
        dec = np.asarray(Image.open(out))
        assert dec.shape == arr.shape
        assert np.abs(dec.astype(int) - arr).mean() < 6


def test_grey_and_alpha_inputs_are_noted(tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.new("L", (20, 18), 77).save(grey)
    assert main(["compress", str(grey), "--codec", "jpeg", "--quality", "80", "-o", str(tmp_path / "g.icm")]) == 0
    assert "grey image replicated" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_bad_streams_give_one_line_errors(tmp_path, image, capsys, damage):
    path, _ = image
    stream = tmp_path / "s.icm"
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "50", "-o", str(stream)]) == 0
    data = bytearray(stream.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"hello world, not a stream")
    else:
        data = bytearray()
    stream.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    capsys.readouterr()
    assert main(["decompress", str(stream), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert not out.exists(), "a failed decode must not leave a partial output"


def test_bad_arguments(tmp_path, image, capsys):
    path, _ = image
    assert main(["compress", str(tmp_path / "missing.png"), "--codec", "jpeg", "-o", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["compress", str(path), "--codec", "nosuchcodec", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nosuchcodec" in err and "jpeg" in err  # names the valid choices
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["compress", str(tmp_path / "bad.png"), "--codec", "jpeg", "-o", str(tmp_path / "x")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["train", "hyperprior", "--set", "stepz=3", "-o", str(tmp_path / "c.pt")]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["train", "hyperprior", "--profile", "huge", "-o", str(tmp_path / "c.pt")]) == 2
    assert "laptop" in capsys.readouterr().err


def test_train_then_resume(tmp_path, capsys):
    ckpt = tmp_path / "hp.pt"
    args = ["train", "hyperprior", "--quiet", "--arch", "N=8", "--arch", "M=8", "--set", "image_size=64",
            "--set", "batch_size=2", "--set", "warmup_steps=0", "-o", str(ckpt)]
    assert main(args + ["--set", "steps=2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 2 and ckpt.is_file()
    # The same command again resumes from the checkpoint (nothing left to do) ...
    assert main(args + ["--set", "steps=2"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["step"] == 2 and second["fingerprint"] == first["fingerprint"]
    # ... a different config refuses to overwrite it and says how ...
    assert main(args + ["--set", "steps=3"]) == 2
    assert "--restart" in capsys.readouterr().err
    # ... and --restart starts over.
    assert main(args + ["--set", "steps=3", "--restart"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3


@pytest.mark.slow
def test_module_entry_point(tmp_path, image):
    path, _ = image
    r = subprocess.run([sys.executable, "-m", "cdlib", "compress", str(path), "--codec", "jpeg", "--quality", "75",
                        "-o", str(tmp_path / "a.icm")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "cdlib", "decompress", str(tmp_path / "missing.icm"), "-o",
                        str(tmp_path / "b.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr


@pytest.mark.slow
def test_fresh_process_reads_streams(tmp_path, image):
    """A new interpreter knows every codec's stream tag before it reads a stream."""
    from cdlib.codecs import get_codec

    _, arr = image
    stream = tmp_path / "a.icm"
    stream.write_bytes(get_codec("jpeg").encode(arr, 75))
    r = subprocess.run([sys.executable, "-m", "cdlib", "decompress", str(stream), "-o", str(tmp_path / "a.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == arr.shape
    r = subprocess.run([sys.executable, "-m", "cdlib", "analyze", str(stream)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no analysis head" in r.stderr, r.stderr


def test_analyze_prints_and_writes_json_without_decoding(tmp_path, toy_codec, monkeypatch, capsys):
    stream = tmp_path / "toy image.icm"
    stream.write_bytes(toy_codec().encode(np.full((12, 16, 3), 200, np.uint8), 1))  # mean 200: bin 7
    out_dir = tmp_path / "out"
    _no_pixel_decoding(monkeypatch)
    assert main(["analyze", str(stream), "-o", str(out_dir)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["codec"] == "toyheads" and res["task"] == "classification" and res["class"] == 7
    assert (res["height"], res["width"]) == (12, 16)
    probs = [p["probability"] for p in res["top5"]]
    assert [p["class"] for p in res["top5"]][0] == 7 and len(probs) == 5
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
    assert json.loads((out_dir / "toy image.json").read_text()) == res


def test_analyze_refuses_what_the_codec_cannot_analyse(tmp_path, image, toy_codec, capsys):
    path, _ = image
    stream = tmp_path / "j.icm"
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "50", "-o", str(stream)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(stream), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: codec 'jpeg' cannot analyse its stream without decoding pixels: it has no analysis head; "
                   "decode it and run an analysis network\n")
    assert not (tmp_path / "out").exists()
    toy = tmp_path / "t.icm"
    toy.write_bytes(toy_codec().encode(np.zeros((8, 8, 3), np.uint8), 1))
    assert main(["analyze", str(toy), "--task", "detection"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: codec 'toyheads' cannot analyse 'detection'") and err.count("\n") == 1
    assert main(["analyze", str(tmp_path / "missing.icm")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad.icm").write_bytes(b"not a stream")
    assert main(["analyze", str(tmp_path / "bad.icm")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_eval_accuracy_decode_free_or_needs_a_classifier(tmp_path, toy_codec, monkeypatch, capsys):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "--codec", "jpeg", "--task", "accuracy", "-o", str(tmp_path / "j.json")]) == 2
    assert "--classifier" in capsys.readouterr().err
    out = tmp_path / "toy.json"
    assert main(["eval", "--codec", "toyheads", "--task", "accuracy", "--limit", "8", "--image-size", "32",
                 "-o", str(out)]) == 0  # the codec classifies its own streams: a decode-free curve
    curve = json.loads(out.read_text())["curve"]
    assert len(curve) == 1 and curve[0]["n_images"] == 8 and 0 <= curve[0]["accuracy"] <= 1
    assert curve[0]["bpp"] > 24 and curve[0]["classify_s"] is not None
    assert curve[0]["psnr"] is None  # lossless: +inf, stored as null


@pytest.mark.slow
def test_analyze_bai2022_stream(tmp_path, monkeypatch, capsys):
    """The shipped paper-A codec classifies a ShapesWorld image from its stream; pixels are never decoded."""
    from cdlib.codecs import get_codec
    from cdlib.data import ShapesWorld

    codec = get_codec("bai2022")
    img = ShapesWorld("test", n=1, image_size=64).images[0]
    stream = tmp_path / "shape.icm"
    stream.write_bytes(codec.encode(img, codec.qualities[-1]))

    def boom(*a, **k):
        raise AssertionError("the pixel decoder ran")

    for name in ("decode", "decode_batch"):
        monkeypatch.setattr(base.Codec, name, boom)
    assert main(["analyze", str(stream), "-o", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["codec"] == "bai2022" and 0 <= res["class"] < 10
    probs = [p["probability"] for p in res["top5"]]
    assert len(probs) == 5 and sum(probs) <= 1.0 + 1e-9 and res["top5"][0]["class"] == res["class"]
    assert json.loads((tmp_path / "shape.json").read_text()) == res


def test_bai2022_default_codec_has_main_rate_points_only(tmp_path, image, capsys):
    """Without weights the bai2022 codec is the zoo's main rate points (q0..q4), never an ablation that shares
    their stage: --quality 6 (once the patchify ablation) is refused, naming the valid rate points."""
    from cdlib import zoo
    from cdlib.codecs import get_codec
    from cdlib.papers.bai2022.recipes import RATE_POINTS

    held = [i for i in RATE_POINTS if any(e["id"] == i for e in zoo.entries(model="bai2022"))]
    if not held:
        pytest.skip("no bai2022 rate points in this zoo")
    codec = get_codec("bai2022")
    assert [m.checkpoint_meta["zoo_id"] for m in codec.models] == held
    path, _ = image
    stream = tmp_path / "q6.icm"
    assert main(["compress", str(path), "--codec", "bai2022", "--quality", "6", "-o", str(stream)]) == 2
    err = capsys.readouterr().err
    assert f"0..{len(held) - 1}" in err and all(i in err for i in held) and "patchify" not in err
    assert not stream.exists()
    # an ablation is loaded by name
    last = get_codec("bai2022", entries=["bai2022_q2_last", "bai2022_q1"])
    assert [m.checkpoint_meta["zoo_id"] for m in last.models] == ["bai2022_q1", "bai2022_q2_last"]  # by rate
    with pytest.raises(ValueError, match="hyperprior"):
        get_codec("bai2022", entries=["hyperprior_q1"])
