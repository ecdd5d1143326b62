"""Hostile and broken inputs of ``python -m cdlib``: outputs that would overwrite an input or an existing
file, output formats, temporary files, training outputs, bad option values, odd images."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib import registry
from cdlib.cli import main
from cdlib.codecs import base
from cdlib.config import make_config
from cdlib.images import load_image


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(1)
    arr = (rng.random((24, 40, 3)) * 40 + np.linspace(20, 200, 40)[None, :, None]).astype(np.uint8)
    path = tmp_path / "v.png"
    Image.fromarray(arr).save(path)
    return path, arr


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _leftovers(folder, keep):
    """Files in ``folder`` other than ``keep`` (names), temporary ones included."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
def test_compress_refuses_to_overwrite_its_input_by_any_path(tmp_path, image, capsys):
    path, _ = image
    before = path.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(path)
    (tmp_path / "sub").mkdir()
    for out in (path, tmp_path / "sub" / ".." / "v.png", link):
        for force in ([], ["--force"]):  # --force never overwrites an input
            assert main(["compress", str(path), "--codec", "jpeg", "--quality", "80", "-o", str(out), *force]) == 2
            assert "refusing to overwrite an input" in _one_line_error(capsys)
    assert path.read_bytes() == before and link.is_symlink()
    # the input given through the link, the output the real file: the same file too
    assert main(["compress", str(link), "--codec", "jpeg", "-o", str(path), "--force"]) == 2
    assert "input" in _one_line_error(capsys)
    assert path.read_bytes() == before


def test_existing_outputs_need_force(tmp_path, image, capsys):
    path, _ = image
    stream, png = tmp_path / "a.icm", tmp_path / "a.png"
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "50", "-o", str(stream)]) == 0
    first = stream.read_bytes()
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "90", "-o", str(stream)]) == 2
    assert "--force" in _one_line_error(capsys) and stream.read_bytes() == first
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "90", "-o", str(stream), "--force"]) == 0
    assert stream.read_bytes() != first
    png.write_bytes(b"precious")
    assert main(["decompress", str(stream), "-o", str(png)]) == 2
    assert "--force" in _one_line_error(capsys) and png.read_bytes() == b"precious"
    assert main(["decompress", str(stream), "-o", str(png), "--force"]) == 0
    assert Image.open(png).format == "PNG"
    assert main(["decompress", str(stream), "-o", str(stream), "--force"]) == 2  # the stream is the input
    assert "input" in _one_line_error(capsys)


def test_eval_and_analyze_outputs_need_force(tmp_path, image, capsys, monkeypatch):
    path, _ = image
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(path).save(folder / "x.png")
    out = tmp_path / "rd.json"
    out.write_text("{}")
    args = ["eval", "--codec", "jpeg", "--qualities", "50", "--data", str(folder), "-o", str(out)]
    assert main(args) == 2
    assert "--force" in _one_line_error(capsys) and out.read_text() == "{}"
    assert main(args + ["--force"]) == 0
    assert json.loads(out.read_text())["codec"] == "jpeg"
    capsys.readouterr()
    # analyze writes OUTDIR/<stem>.json: refused when it exists, and when OUTDIR is a file
    monkeypatch.setitem(base._CODECS, "toyanalyse", _ToyAnalyse)
    stream = tmp_path / "s.icm"
    stream.write_bytes(_ToyAnalyse().encode(np.zeros((8, 8, 3), np.uint8), 1))
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "s.json").write_text("keep")
    assert main(["analyze", str(stream), "-o", str(tmp_path / "res")]) == 2
    assert "--force" in _one_line_error(capsys) and (tmp_path / "res" / "s.json").read_text() == "keep"
    assert main(["analyze", str(stream), "-o", str(tmp_path / "res"), "--force"]) == 0
    assert json.loads((tmp_path / "res" / "s.json").read_text())["codec"] == "toyanalyse"
    capsys.readouterr()
    assert main(["analyze", str(stream), "-o", str(out)]) == 2
    assert "names a folder" in _one_line_error(capsys)


class _ToyAnalyse(base.Codec):
    name = "toyanalyse"
    qualities = (1,)
    tasks = ("classification",)

    def __init__(self, **kw):
        pass

    def _encode(self, image, quality):
        return [image.tobytes()], 0, 0

    def _decode(self, strings, header):
        return np.frombuffer(strings[0], np.uint8).reshape(header.height, header.width, 3)

    def analyse(self, streams, task):
        return torch.zeros(len(streams), 10)


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP"),
                                     (".bmp", "BMP"), (".tif", "TIFF"), (".tiff", "TIFF"), (".ppm", "PPM")])
def test_decompress_writes_the_format_of_the_extension(tmp_path, image, capsys, ext, fmt):
    path, arr = image
    stream = tmp_path / "a.icm"
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "95", "-o", str(stream)]) == 0
    out = tmp_path / f"dec{ext}"
    assert main(["decompress", str(stream), "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == fmt and im.size == (arr.shape[1], arr.shape[0])
    assert _leftovers(tmp_path, {"v.png", "a.icm", out.name}) == []


def test_decompress_refuses_an_unknown_extension_and_a_folder(tmp_path, image, capsys):
    path, _ = image
    stream = tmp_path / "a.icm"
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(stream)]) == 0
    capsys.readouterr()
    for name in ("out.xyz", "noext"):
        assert main(["decompress", str(stream), "-o", str(tmp_path / name)]) == 2
        err = _one_line_error(capsys)
        assert ".png" in err and ".jpg" in err and ".tiff" in err
    folder = tmp_path / "dir"
    folder.mkdir()
    assert main(["decompress", str(stream), "-o", str(folder)]) == 2
    assert "is a folder" in _one_line_error(capsys)
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(folder), "--force"]) == 2
    assert "is a folder" in _one_line_error(capsys)
    assert list(folder.iterdir()) == [] and _leftovers(tmp_path, {"v.png", "a.icm", "dir"}) == []
    # compress writes a stream: an image extension would lie about it
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(tmp_path / "x.jpg")]) == 2
    assert "cdlib stream" in _one_line_error(capsys)


@pytest.mark.parametrize("where", ["flush", "save", "replace"])
def test_a_failed_write_leaves_no_temporary_file(tmp_path, image, capsys, monkeypatch, where):
    path, _ = image
    stream = tmp_path / "a.icm"
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(stream)]) == 0
    capsys.readouterr()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    if where == "flush":  # the stream is written, the disk refuses to flush it
        monkeypatch.setattr(os, "fsync", full_disk)
        args = ["compress", str(path), "--codec", "jpeg", "-o", str(tmp_path / "b.icm")]
    elif where == "save":  # the image encoder fails half-way
        monkeypatch.setattr(Image.Image, "save", lambda self, fp, **k: (fp.write(b"partial"), full_disk())[1])
        args = ["decompress", str(stream), "-o", str(tmp_path / "b.png")]
    else:
        monkeypatch.setattr(os, "replace", full_disk)
        args = ["decompress", str(stream), "-o", str(tmp_path / "b.png")]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "No space left on device" in err and "b." in err
    monkeypatch.undo()
    assert _leftovers(tmp_path, {"v.png", "a.icm"}) == []


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, image, capsys, monkeypatch):
    path, _ = image
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(path / "x.icm")]) == 2
    assert "is not a folder" in _one_line_error(capsys)
    # a read-only folder (simulated: the tests may run as root, who can write anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != ro and real_access(p, mode, **k))
    monkeypatch.setattr(base.Codec, "encode", lambda *a, **k: pytest.fail("encoded before checking the output"))
    for out in (ro / "x.icm", ro / "new" / "x.icm"):
        assert main(["compress", str(path), "--codec", "jpeg", "-o", str(out)]) == 2
        assert f"the folder {ro} is not writable" in _one_line_error(capsys)
    assert list(ro.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------
# Training outputs and sizes (the loop's own checks are in test_train.py)
# ------------------------------------------------------------------------------------------------------------
TRAIN = ["train", "hyperprior", "--quiet", "--arch", "N=8", "--arch", "M=8", "--set", "batch_size=2",
         "--set", "warmup_steps=0", "--set", "steps=1"]


def _no_training(monkeypatch):
    import cdlib.data

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(cdlib.data, "build_dataset", boom)


def test_train_checks_its_output_before_training(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(TRAIN + ["-o", str(blocker / "c.pt")]) == 2
    assert "is not a folder" in _one_line_error(capsys)
    assert main(TRAIN + ["-o", str(tmp_path)]) == 2
    assert "is a folder" in _one_line_error(capsys)
    # an existing file that is not a training checkpoint: refused (even with --restart) unless --force
    precious = tmp_path / "photo.png"
    precious.write_bytes(b"not a checkpoint")
    for extra in ([], ["--restart"]):
        assert main(TRAIN + ["-o", str(precious), *extra]) == 2
        assert "--force" in _one_line_error(capsys)
    assert precious.read_bytes() == b"not a checkpoint"
    # the init_from checkpoint is an input
    assert main(TRAIN + ["--set", f"init_from={precious}", "-o", str(precious), "--force"]) == 2
    assert "input" in _one_line_error(capsys)


def test_train_force_overwrites_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "c.pt"
    out.write_bytes(b"junk")
    assert main(TRAIN + ["--set", "image_size=64", "-o", str(out), "--force"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    from cdlib.checkpoint import read_checkpoint

    assert read_checkpoint(out)["step"] == 1


def test_train_full_disk_is_one_line_with_the_path(tmp_path, capsys, monkeypatch):
    import cdlib.checkpoint as ck

    def full(obj, f, *a, **k):
        f.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1728 vs 1626\nframe #0 ...")

    monkeypatch.setattr(ck.torch, "save", full)
    out = tmp_path / "c.pt"
    assert main(TRAIN + ["--set", "image_size=64", "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"cannot save checkpoint {out} at step 1" in err and "inline_container" not in err
    assert list(tmp_path.iterdir()) == []


def test_train_image_size_not_a_multiple_of_the_stride(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    assert main(TRAIN + ["--set", "image_size=33", "-o", str(tmp_path / "c.pt")]) == 2
    err = _one_line_error(capsys)
    assert "image_size" in err and "multiple of 64" in err and "nearest valid: 64" in err
    # a registered size_multiple is checked when the config is made
    name = "size_multiple_toy"
    registry.register_model(name, arch={"laptop": {}, "paper": {}}, size_multiple=16)(torch.nn.Identity)
    try:
        with pytest.raises(ValueError, match=r"image_size.*multiple of 16.*nearest valid: 32 or 48"):
            make_config(name, image_size=33)
        with pytest.raises(ValueError, match=r"nearest valid: 16$"):
            make_config(name, image_size=9)
        assert make_config(name, image_size=48).image_size == 48
    finally:
        registry.unregister_model(name)
    with pytest.raises(ValueError, match="size_multiple"):
        registry.register_model("bad_multiple", arch={"laptop": {}, "paper": {}}, size_multiple=0)


# ------------------------------------------------------------------------------------------------------------
# Option values
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def learned(monkeypatch):
    """A two-rate-point learned codec of untrained tiny factorized models, as ``factorized``."""
    from cdlib.codecs.learned import LearnedCodec

    torch.manual_seed(0)
    models = [registry.create_model("factorized", "laptop", N=8, M=8) for _ in range(2)]
    monkeypatch.setitem(base._CODECS, "factorized", lambda **kw: LearnedCodec(models, name="factorized"))


def test_quality_must_be_a_number(tmp_path, image, capsys):
    path, _ = image
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "abc", "-o", str(tmp_path / "a")]) == 2
    assert "--quality expects a number, got 'abc'" in _one_line_error(capsys)
    assert main(["compress", str(path), "--codec", "jpeg", "--quality", "nan", "-o", str(tmp_path / "a")]) == 2
    assert "finite" in _one_line_error(capsys)
    assert main(["eval", "--codec", "jpeg", "--qualities", "50,x", "-o", str(tmp_path / "e.json")]) == 2
    assert "--qualities expects a number, got 'x'" in _one_line_error(capsys)
    assert not list(tmp_path.glob("a*")) and not (tmp_path / "e.json").exists()


def test_learned_quality_is_a_rate_point_index_never_truncated(tmp_path, image, capsys, learned):
    path, _ = image
    for q in ("1.5", "2", "-1"):
        args = ["compress", str(path), "--codec", "factorized", "--quality", q, "-o", str(tmp_path / "a.icm")]
        assert main(args) == 2
        err = _one_line_error(capsys)
        assert "rate-point index, an integer in 0..1" in err and q in err
    assert not (tmp_path / "a.icm").exists()
    for q in ("1", "1.0"):
        assert main(["compress", str(path), "--codec", "factorized", "--quality", q, "-o", str(tmp_path / "a.icm"),
                     "--force"]) == 0
        from cdlib.bitstream import unpack

        assert unpack((tmp_path / "a.icm").read_bytes())[0].quality == 1
    capsys.readouterr()
    assert main(["eval", "--codec", "factorized", "--qualities", "0,0.5", "-o", str(tmp_path / "e.json")]) == 2
    assert "rate-point index" in _one_line_error(capsys)


def test_arch_values_are_typed(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    out = str(tmp_path / "c.pt")
    assert main(["train", "hyperprior", "--arch", "N=abc", "-o", out]) == 2
    err = _one_line_error(capsys)
    assert "--arch N" in err and "expected an integer" in err and "'hyperprior'" in err
    assert main(["train", "hyperprior", "--arch", "N=8.5", "-o", out]) == 2
    assert "expected an integer" in _one_line_error(capsys)
    assert main(["train", "hyperprior", "--arch", "Q=3", "-o", out]) == 2
    err = _one_line_error(capsys)
    assert "'Q'" in err and "valid keys: M, N" in err
    assert main(["train", "hyperprior", "--arch", "N", "-o", out]) == 2
    assert "--arch expects key=value" in _one_line_error(capsys)
    assert main(["train", "hyperprior", "--arch", "N=-4", "-o", out]) == 2  # the right type, a value the model refuses
    assert "cannot build model 'hyperprior'" in _one_line_error(capsys)


def test_checkpoint_on_a_classical_codec(tmp_path, image, capsys):
    path, _ = image
    for cmd in (["compress", str(path), "--codec", "jpeg"], ["eval", "--codec", "webp"]):
        assert main(cmd + ["--checkpoint", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.json")]) == 2
        err = _one_line_error(capsys)
        assert "classical codec and takes no --checkpoint" in err and "factorized" in err


def test_a_codec_refusing_its_checkpoint_is_one_line(tmp_path, image, capsys, monkeypatch):
    """The codecs refuse a classifier checkpoint with a ValueError; the CLI shows its first line only."""
    path, _ = image
    ckpt = tmp_path / "cls.pt"
    ckpt.write_bytes(b"x")

    def refuse(**kw):
        raise ValueError(f"{kw['checkpoints'][0]} is a 'pixel_classifier' checkpoint, not a 'factorized' codec\n"
                         "details on a second line")

    monkeypatch.setitem(base._CODECS, "factorized", refuse)
    assert main(["compress", str(path), "--codec", "factorized", "--checkpoint", str(ckpt),
                 "-o", str(tmp_path / "a.icm")]) == 2
    assert "not a 'factorized' codec" in _one_line_error(capsys)


def test_manifest_entry_without_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CDLIB_ZOO", str(tmp_path))
    entry = {"id": "hp-a", "model": "hyperprior", "profile": "laptop", "steps": 1, "metrics": {}, "file": "a.pt"}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "cdlib-zoo-1", "entries": [entry]}))
    assert main(["zoo", "list"]) == 2
    err = _one_line_error(capsys)
    assert "entry 0 ('hp-a') lacks 'cpu_minutes'" in err and "manifest.json" in err
    assert main(["zoo", "verify"]) == 2
    assert "lacks 'sha256'" in _one_line_error(capsys)
    del entry["id"]
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "cdlib-zoo-1", "entries": [entry]}))
    assert main(["zoo", "verify"]) == 2
    assert "entry 0 ('no id') lacks 'id', 'sha256'" in _one_line_error(capsys)


def test_key_errors_print_their_message_unquoted(capsys, monkeypatch):
    import cdlib.cli as cli

    def unknown(a):
        raise KeyError("unknown model 'x'; available models: a, b")

    def bare(a):
        raise KeyError("id")

    monkeypatch.setattr(cli, "cmd_bench", unknown)
    assert main(["bench"]) == 2
    assert capsys.readouterr().err == "error: unknown model 'x'; available models: a, b\n"
    monkeypatch.setattr(cli, "cmd_bench", bare)
    assert main(["bench"]) == 2
    assert capsys.readouterr().err == "internal error (KeyError): missing key 'id'\n"


# ------------------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------------------
def test_16_bit_image_is_scaled_by_its_bit_depth_not_its_maximum(tmp_path):
    dark = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 250)  # 16-bit, every value below 256
    for ext in (".png", ".tif"):
        path = tmp_path / f"dark{ext}"
        Image.fromarray(dark).save(path)
        img, note = load_image(path, return_note=True)
        expect = np.round(dark / 65535.0 * 255.0).astype(np.uint8)
        assert img.shape == (20, 30, 3) and np.array_equal(img[..., 0], expect) and img.max() <= 1
        assert "16-bit samples scaled" in note
    bright = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(bright).save(tmp_path / "bright.png")
    img = load_image(tmp_path / "bright.png")
    assert np.array_equal(img[..., 1], np.round(bright / 65535.0 * 255.0).astype(np.uint8))


@pytest.mark.parametrize("ext", [".gif", ".tif"])
def test_multi_frame_image_takes_the_first_frame_with_a_note(tmp_path, capsys, ext):
    frames = [Image.new("RGB", (16, 12), (60 * i, 200 - 60 * i, 90)) for i in range(3)]
    path = tmp_path / f"anim{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    img, note = load_image(path, return_note=True)
    assert np.abs(img.astype(int) - np.asarray(frames[0]).astype(int)).max() <= 8  # GIF: a palette
    assert "3 frames" in note and "first" in note
    assert main(["compress", str(path), "--codec", "jpeg", "-o", str(tmp_path / "a.icm")]) == 0
    assert "note: 3 frames in the file, only the first is used" in capsys.readouterr().err
    still = tmp_path / "still.png"
    frames[0].save(still)
    assert load_image(still, return_note=True)[1] == ""
