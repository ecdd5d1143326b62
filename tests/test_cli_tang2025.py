"""python -m cdlib compress / decompress / analyze with paper C's feature codec (tang2025): decompress writes the
decoded feature tensor (there is no pixel decoder) and refuses an image output, analyze prints the class and
the detections as JSON and writes the instance masks.  Tiny models saved to tmp files."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib import registry
from cdlib.cli import main
from cdlib.papers.tang2025.model import LAPTOP_ARCH
from toys import save_model_checkpoint as _save

TINY = dict(widths=(32, 16, 16, 32), re_dim=8, re_latent=8, N=16, M=16, dim=16, heads=2, dim_head=8, ctx_depth=1,
            proj_dim=16, proj_hidden=32, queue=40)
TINY_DET = dict(fpn_channels=16, anchor_sizes=(8, 16, 32, 64, 128), box_hidden=32, mask_channels=16,
                rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10,
                box_score_thresh=0.0)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tang2025_ckpts")
    torch.manual_seed(0)
    codec = registry.create_model("tang2025", "laptop", **TINY)
    codec.update(force=True)
    torch.manual_seed(1)
    heads = registry.create_model("tang2025_tasks", "laptop", codec={**LAPTOP_ARCH, **TINY}, detector=TINY_DET)
    heads.load_state_dict(codec.state_dict(), strict=False)  # the same backbone (and tail) as the codec
    return {"codec": _save(codec, "tang2025", root / "codec.pt"),
            "heads": _save(heads, "tang2025_tasks", root / "heads.pt")}


pytestmark = pytest.mark.usefixtures("empty_zoo")  # tests/conftest.py


@pytest.fixture
def stream(tmp_path, ckpts):
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "scene.icm"
    assert main(["compress", str(img), "--codec", "tang2025", "--checkpoint", str(ckpts["codec"]), "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_decompress_writes_the_feature_tensor(tmp_path, ckpts, stream, suffix, capsys):
    out = tmp_path / f"feats{suffix}"
    assert main(["decompress", str(stream), "--checkpoint", str(ckpts["codec"]), "-o", str(out)]) == 0
    feats = torch.load(out) if suffix == ".pt" else torch.from_numpy(np.load(out))
    assert feats.shape == (32, 18, 23) and torch.isfinite(feats).all()  # ceil(70 / 4), ceil(90 / 4)
    assert "no pixel decoder" in capsys.readouterr().out


def test_decompress_to_an_image_is_refused_with_the_reason(tmp_path, ckpts, stream, capsys):
    assert main(["decompress", str(stream), "--checkpoint", str(ckpts["codec"]), "-o", str(tmp_path / "x.png")]) != 0
    err = capsys.readouterr().err
    assert "no pixel decoder" in err and ".pt" in err and not (tmp_path / "x.png").exists()


def test_analyze_prints_class_and_detections_and_writes_masks(tmp_path, ckpts, stream, capsys):
    masks = tmp_path / "masks.png"
    rc = main(["analyze", str(stream), "--checkpoint", str(ckpts["codec"]), "--checkpoint", str(ckpts["heads"]),
               "--masks-png", str(masks), "--json", str(tmp_path / "a.json")])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["codec"] == "tang2025" and result["tasks"] == ["classification", "detection"]
    assert 0 <= result["classification"]["label"] < 10 and len(result["classification"]["top3"]) == 3
    assert isinstance(result["detections"], list)
    for d in result["detections"]:
        assert d["score"] >= 0.5 and 0 <= d["box"][0] <= d["box"][2] <= 90 and d["box"][3] <= 70
    img = Image.open(masks)
    assert img.mode == "P" and img.size == (90, 70) and np.asarray(img).max() <= len(result["detections"])
    assert json.loads((tmp_path / "a.json").read_text())["classification"] == result["classification"]


def test_analyze_without_heads_says_how_to_get_them(ckpts, stream, capsys):
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["codec"])]) != 0
    assert "task heads" in capsys.readouterr().err


def test_a_corrupt_stream_is_one_clear_line(tmp_path, ckpts, stream, capsys):
    data = bytearray(stream.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.icm"
    bad.write_bytes(bytes(data))
    assert main(["decompress", str(bad), "--checkpoint", str(ckpts["codec"]), "-o", str(tmp_path / "f.pt")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "f.pt").exists()


def test_heads_of_another_backbone_are_refused(tmp_path, ckpts, stream, capsys):
    torch.manual_seed(5)
    other = registry.create_model("tang2025_tasks", "laptop", codec={**LAPTOP_ARCH, **TINY}, detector=TINY_DET)
    path = _save(other, "tang2025_tasks", tmp_path / "other_heads.pt")
    assert main(["analyze", str(stream), "--checkpoint", str(ckpts["codec"]), "--checkpoint", str(path)]) != 0
    assert "another backbone" in capsys.readouterr().err
