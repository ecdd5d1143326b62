"""Paper C's four training stages through cdlib.train: MoCo v2 + ContrastiveCrop (stages 1 and 3), the RE
module (2), the codec (4); resume, exports, DDP; and the linear probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdlib.config import make_config
from cdlib.papers.tang2025.moco import MoCoState, TwoViews, _crop_box, heatmap_boxes, info_nce
from cdlib.registry import create_model
from cdlib.train import seed_everything, train

# a small laptop model (the stages' code paths, not their quality)
TINY = dict(widths=(32, 16, 16, 32), re_dim=8, re_latent=8, N=16, M=16, dim=16, heads=2, dim_head=8, ctx_depth=1,
            proj_dim=16, proj_hidden=32, queue=40)


def _model(seed=0, **kw):
    seed_everything(seed)
    return create_model("tang2025", "laptop", **{**TINY, **kw})


def _cfg(stage="moco", **kw):
    base = dict(stage=stage, steps=6, num_train=24, batch_size=8, image_size=64, box_warmup=1, box_every=1,
                ckpt_every=4, log_every=1, bn_chunk=4)
    return make_config("tang2025", "laptop", **{**base, **kw})


def test_heatmap_boxes_bound_the_hot_region():
    fmap = torch.zeros(2, 3, 4, 4)
    fmap[0, :, 1:3, 2:4] = 1.0          # hot block: rows 1-2, columns 2-3 of 4
    boxes = heatmap_boxes(fmap, 64)
    x0, y0, x1, y1 = boxes[0].tolist()
    # bilinear upsampling spreads the block by up to half a cell (8 px of 16) on each side
    assert 0.25 <= x0 <= 0.5 and x1 == 1.0 and 0.0 < y0 <= 0.25 and 0.75 <= y1 < 1.0
    assert boxes[1].tolist() == [0.0, 0.0, 1.0, 1.0]  # flat map: nothing above the threshold -> whole image


def test_contrastive_crop_centres_lie_in_the_box_and_plain_crops_do_not():
    box = (0.6, 0.6, 1.0, 1.0)
    rng = np.random.default_rng(0)
    centres = []
    for ccrop in (True, False):
        c = []
        for _ in range(400):
            top, left, h, w = _crop_box(rng, 100, 100, box, ccrop)
            assert 0 <= top and 0 <= left and top + h <= 100 and left + w <= 100 and h > 0 and w > 0
            c.append((left + w / 2, top + h / 2))
        centres.append(np.array(c))
    # clipping at the border pulls centres a little inwards, never out of the lower-right quarter's reach
    assert centres[0].mean() > 65 and centres[1].mean() < 55


def test_two_views_are_seeded_by_epoch_and_index():
    from cdlib.data import ShapesWorld

    data = ShapesWorld("train", n=4, image_size=64, cache=False)
    state = MoCoState({"p": torch.nn.Linear(2, 2)}, 8, 16)
    views = TwoViews(data, state, refresh=None, seed=3, box_warmup=0, box_every=1)
    a, b = views[1], views[1]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], a["image2"])
    views.set_epoch(1)
    assert not torch.equal(views[1]["image"], a["image"])
    assert a["image"].shape == (3, 64, 64) and 0 <= float(a["image"].min()) and float(a["image"].max()) <= 1
    assert not views.base.augment and data.augment  # the views' base is a copy without the dataset's flips
    assert state.boxes.shape == (4, 4)


def test_info_nce_prefers_the_positive_key():
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(8, 32), dim=0)
    assert info_nce(q, q, queue, 0.2) < info_nce(q, -q, queue, 0.2)


def test_enqueue_wraps_around():
    state = MoCoState({"p": torch.nn.Linear(2, 2)}, 2, 5)
    state.enqueue(torch.ones(4, 2))
    state.enqueue(2 * torch.ones(3, 2))
    assert int(state.queue_ptr) == 2
    assert state.queue[0].tolist() == [2, 2, 1, 1, 2]


def _changed(before, after, prefix):
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)
               and before[k].is_floating_point() and "running" not in k)


@pytest.mark.parametrize("stage,trains,still", [
    ("moco", ["head.", "tail.", "proj."], ["re.", "g_a.", "entropy."]),
    ("joint", ["head.", "re.", "tail.", "proj."], ["g_a.", "g_s.", "entropy."]),
])
def test_ssl_stage_trains_its_parts_and_the_key_follows(stage, trains, still):
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = train(m, _cfg(stage, steps=4), progress=False)
    after = m.state_dict()
    assert "contrast" in res["metrics"] and np.isfinite(res["metrics"]["loss"])
    if stage == "joint":
        assert {"rate", "dist"} <= set(res["metrics"])
    assert all(_changed(before, after, p) for p in trains)
    assert not any(_changed(before, after, p) for p in still)
    # the key encoder is a moving average of the query: close to it, but not equal after momentum steps
    q, k = after["head.stem.0.weight"], after["moco.key.head.stem.0.weight"]
    assert not torch.equal(q, k) and (q - k).abs().max() < (q - before["head.stem.0.weight"]).abs().max()
    assert int(m.moco.ready) == {"moco": 1, "joint": 3}[stage]
    assert int(m.moco.queue_ptr) == 4 * 8 % 40  # 4 steps of 8 keys in a queue of 40


def test_boxes_are_refreshed_on_schedule_and_resume_is_exact(tmp_path):
    cfg = _cfg("moco", steps=8, num_train=24, batch_size=8)  # 3 steps per epoch: refreshes at epochs 1, 2
    whole = _model()
    train(whole, cfg, out=tmp_path / "a.pt", progress=False)
    # (at 64 px the tiny backbone's 2x2 layer4 maps give whole-image boxes: heatmap_boxes is tested above)
    assert int(whole.moco.boxes_epoch) == 2 and whole.moco.boxes.shape == (24, 4)

    class Stop(Exception):
        pass

    def stop_at_6(step, record):
        if step == 6:
            raise Stop

    with pytest.raises(Stop):
        train(_model(), cfg, out=tmp_path / "b.pt", progress=False, callback=stop_at_6)
    resumed = _model(seed=1)  # other initial weights: everything must come from the checkpoint (step 4)
    res = train(resumed, cfg, out=tmp_path / "b.pt", progress=False)
    assert res["resumed_from"] == 4
    a, b = whole.state_dict(), resumed.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_plain_crops_never_compute_boxes():
    m = _model()
    train(m, _cfg("moco", steps=4, ccrop=False), progress=False)
    assert int(m.moco.boxes_epoch) == -1


def test_export_leaves_out_the_key_encoder_and_the_next_stage_resyncs(tmp_path):
    from cdlib.checkpoint import export_checkpoint, load_model, read_checkpoint

    m = _model()
    train(m, _cfg("moco", steps=3), out=tmp_path / "s1.pt", progress=False)
    export_checkpoint(tmp_path / "s1.pt", tmp_path / "s1_export.pt", fp16=False)
    stored = read_checkpoint(tmp_path / "s1_export.pt")["state_dict"]
    assert stored and not any(k.startswith("moco.") for k in stored)
    assert getattr(load_model(tmp_path / "s1_export.pt"), "moco", None) is None
    # stage 2 from the export, then stage 3 from stage 2: the key encoder starts as the query
    m2 = _model(seed=5)
    train(m2, _cfg("re", steps=2, init_from=str(tmp_path / "s1_export.pt"), optimizer="adam", lr=1e-4),
          out=tmp_path / "s2.pt", progress=False)
    assert torch.equal(m2.head.stem[0].weight, m.head.stem[0].weight)  # frozen in stage 2
    export_checkpoint(tmp_path / "s2.pt", tmp_path / "s2_export.pt", fp16=False)
    m3 = _model(seed=6)
    train(m3, _cfg("joint", steps=1, init_from=str(tmp_path / "s2_export.pt"), moco_m=1.0), progress=False)
    # momentum 1: the key keeps the synced copy of the query as it was before the first step
    assert int(m3.moco.ready) == 3
    assert torch.equal(m3.moco.key["re"].encoder.proj_in.weight, m2.re.encoder.proj_in.weight)
    assert not torch.equal(m3.re.encoder.proj_in.weight, m2.re.encoder.proj_in.weight)  # the query trained


def test_every_stage_has_its_losses_and_frozen_parts():
    from types import SimpleNamespace

    m = _model()
    x = torch.rand(2, 3, 64, 64)
    for stage, keys in [("re", {"dist", "rate"}), ("codec", {"dist", "rate", "feat2", "feat3", "feat4"}),
                        ("moco", {"contrast"}), ("joint", {"contrast", "dist", "rate"})]:
        cfg = SimpleNamespace(stage=stage, model_options={"moco_t": 0.2})
        terms = m.loss_terms({"image": x, "key": torch.nn.functional.normalize(torch.randn(2, 16), dim=1)}, cfg)
        assert set(terms) == set(m.loss_weights(cfg)) == keys
        assert torch.isfinite(sum(terms.values()))
        assert set(m.frozen_parts(cfg)) & {"g_a", "entropy"} == (set() if stage == "codec" else {"g_a", "entropy"})
    with pytest.raises(ValueError, match="valid values"):
        m.frozen_parts(SimpleNamespace(stage="nope"))


def test_linear_probe_separates_separable_features():
    from cdlib.papers.tang2025.tasks import fit_probe, probe_accuracy, standard_error

    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    x = torch.randn(300, 10, generator=g) + 4 * torch.nn.functional.one_hot(y, 10).float()
    probe = fit_probe(x[:200], y[:200], 3)
    assert probe_accuracy(probe, x[200:], y[200:]) > 0.95
    noise = fit_probe(torch.randn(200, 10, generator=g), y[:200], 3)
    assert probe_accuracy(noise, torch.randn(100, 10, generator=g), y[200:]) < 0.6
    assert abs(standard_error(0.5, 100) - 0.05) < 1e-9


@pytest.mark.slow
def test_paper_profile_moco_under_ddp_two_processes_gloo(tmp_path):
    """Stage 1 of the paper profile (ResNet-50, ImageFolder data, ContrastiveCrop with a box refresh) with tiny
    images, two processes (gloo): the ranks end with equal weights and queues, the queue holds both ranks'
    keys, and the boxes cover every image."""
    import textwrap

    from PIL import Image
    from toys import run_torchrun

    rng = np.random.default_rng(0)
    for c in ("n01", "n02"):
        for k in range(4):
            p = tmp_path / "inet" / "train" / c / f"{k}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(p)
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f'''
        import os
        import torch
        torch.set_num_threads(1)
        from cdlib import registry
        from cdlib.config import make_config
        from cdlib.train import train
        rank = int(os.environ["RANK"])
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        model = registry.create_model("tang2025", "paper", queue=64)
        cfg = make_config("tang2025", "paper", image_size=64, batch_size=2, epochs=0.0, steps=4, ckpt_every=4,
                          log_every=1, num_workers=0, device="cpu", amp=False, num_classes=2, box_warmup=1,
                          box_every=1, bn_chunk=1, data_path={str(tmp_path / "inet")!r})
        res = train(model, cfg, out={str(tmp_path)!r} + "/ddp.pt", progress=False)
        torch.save({{"state_dict": model.state_dict(), "metrics": res["metrics"]}},
                   {str(tmp_path)!r} + f"/rank{{rank}}.pt")
    '''))
    run_torchrun(script)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    differ = [k for k, v in r0["state_dict"].items() if not torch.equal(v, r1["state_dict"][k])
              and ".running_" not in k and "num_batches" not in k]  # BN statistics are per process, as in MoCo
    assert differ == []
    assert r0["metrics"] == r1["metrics"] and "contrast" in r0["metrics"]
    state = r0["state_dict"]
    assert int(state["moco.queue_ptr"]) == 4 * 2 * 2  # 4 steps x 2 processes x 2 keys
    assert int(state["moco.boxes_epoch"]) >= 1 and state["moco.boxes"].shape == (8, 4)
