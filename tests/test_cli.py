"""python -m cdlib: compress / decompress / train / eval, and one-line errors for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cdlib.cli import main


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


def test_module_entry_point(tmp_path, image):
    path, _ = image
    r = subprocess.run([sys.executable, "-m", "cdlib", "compress", str(path), "--codec", "jpeg", "--quality", "75",
                        "-o", str(tmp_path / "a.icm")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "cdlib", "decompress", str(tmp_path / "missing.icm"), "-o",
                        str(tmp_path / "b.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr
