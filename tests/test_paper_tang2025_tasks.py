"""Paper C's task heads: the linear probe and a torchvision Mask R-CNN on stride-4 features (never pixels)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cdlib.config import make_config
from cdlib.papers.tang2025.detection import FeatureMaskRCNN
from cdlib.papers.tang2025.model import LAPTOP_ARCH
from cdlib.registry import create_model
from cdlib.train import seed_everything, train

TINY_CODEC = dict(backbone="basic", widths=(32, 16, 16, 32), blocks=(1, 1, 1, 1), re_dim=8, re_latent=8, N=16, M=16,
                  dim=16, heads=2, dim_head=8, ctx_depth=1, proj_dim=16, proj_hidden=32, queue=40)
TINY_DET = dict(fpn_channels=16, anchor_sizes=(8, 16, 32, 64, 128), box_hidden=32, mask_channels=16,
                rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=50,
                rpn_post_nms_top_n_test=20, box_detections_per_img=10)


def _tasks(**kw):
    seed_everything(0)
    return create_model("tang2025_tasks", "laptop", codec={**LAPTOP_ARCH, **TINY_CODEC}, detector=TINY_DET, **kw)


def test_feature_mask_rcnn_reads_features_and_answers_in_image_pixels():
    seed_everything(0)
    backbone = create_model("tang2025", "laptop", **TINY_CODEC)
    det = FeatureMaskRCNN(backbone.tail, 32, 3, **TINY_DET)
    f = torch.randn(2, 32, 16, 16)  # stride-4 features of 64 x 64 images
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 20:50] = 1
    targets = [{"boxes": torch.tensor([[20.0, 10.0, 50.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks}] * 2
    det.train()
    with pytest.raises(ValueError, match="targets"):
        det(f)
    losses = det(f, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    det.eval()
    with torch.no_grad():
        out = det(f)
    assert len(out) == 2 and out[0]["masks"].shape[-2:] == (64, 64)
    assert (out[0]["boxes"] <= 64).all()
    # the tail is the backbone's (shared, frozen), not a part of the detector's state
    assert not any("tail" in k for k in det.state_dict())


def test_tasks_model_trains_heads_only_on_clean_features(tmp_path):
    m = _tasks()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cfg = make_config("tang2025_tasks", "laptop", steps=2, num_train=8, batch_size=4, image_size=64, log_every=1)
    res = train(m, cfg, progress=False)
    assert {"probe_ce", "loss_mask", "loss_classifier"} <= set(res["metrics"])
    after = m.state_dict()
    changed = {k.split(".")[0] for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert changed == {"probe", "detector"}
    m.eval()
    with torch.no_grad():
        out = m.analyse_features(torch.randn(1, 32, 16, 16))
    assert out["logits"].shape == (1, 10) and (out["detections"][0]["labels"] >= 0).all()


def test_only_the_chosen_head_trains():
    m = _tasks()
    cfg = make_config("tang2025_tasks", "laptop", steps=1, num_train=4, batch_size=4, image_size=64, tasks="probe")
    assert "detector" in m.frozen_parts(cfg)
    res = train(m, cfg, progress=False)
    assert "loss_mask" not in res["metrics"] and "probe_ce" in res["metrics"]


def test_a_backbone_checkpoint_initialises_the_tasks_backbone(tmp_path):
    from cdlib.checkpoint import CKPT_FORMAT, load_init_weights

    seed_everything(3)
    backbone = create_model("tang2025", "laptop", **TINY_CODEC)
    backbone.moco.resize_boxes(24)  # a stage-1 training checkpoint holds the boxes of its training set
    torch.save({"format": CKPT_FORMAT, "model": "tang2025", "arch": TINY_CODEC, "state_dict": backbone.state_dict()},
               tmp_path / "b.pt")
    m = _tasks()
    report = load_init_weights(m, tmp_path / "b.pt", verbose=False)
    assert torch.equal(m.codec.head.stem[0].weight, backbone.head.stem[0].weight)
    assert not [k for k in report["missing"] if k.startswith("codec.") and "moco" not in k]


def test_where_must_be_clean_features():
    with pytest.raises(ValueError, match="f1"):
        _tasks(where="f3")


def test_supervised_reference_trains_the_backbone_too():
    m = _tasks(where="f1")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cfg = make_config("tang2025_tasks", "laptop", steps=1, num_train=4, batch_size=4, image_size=64, supervised=True)
    train(m, cfg, progress=False)
    after = m.state_dict()
    changed = {".".join(k.split(".")[:2]) for k in before
               if before[k].is_floating_point() and not torch.equal(before[k], after[k]) and "running" not in k}
    assert {"codec.head", "codec.tail", "probe.1"} <= changed and "codec.g_a" not in changed


def test_shared_streams_give_the_measurements_of_fresh_ones():
    """experiments.encode_all encodes once; stream_report (and decode_free_curve) read the first streams of it
    and measure what a fresh encoding measures; too few streams are refused."""
    from cdlib.codecs import get_codec
    from cdlib.papers.tang2025 import experiments as ex

    seed_everything(0)
    model = create_model("tang2025", "laptop", **TINY_CODEC).eval()
    model.update(force=True)
    codec = get_codec("tang2025", model=model)
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    shared = ex.encode_all(codec, images)
    assert set(shared) == set(codec.qualities) and all(len(s) == 5 for s in shared.values())
    fresh = ex.stream_report(codec, images[:3])
    pd.testing.assert_frame_equal(ex.stream_report(codec, images[:3], streams=shared), fresh)
    with pytest.raises(ValueError, match="2 streams at quality"):
        ex.stream_report(codec, images[:3], streams={q: s[:2] for q, s in shared.items()})
