"""Paper B's model, codec and analysis networks (cdlib.papers.zhang2023: model.py, codec.py, analysis.py).

Tiny sizes: 32-px images, narrow widths, 1-4 training steps."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cdlib import registry
from cdlib.bitstream import BitstreamError, unpack
from cdlib.checkpoint import read_checkpoint
from cdlib.codecs import get_codec
from cdlib.config import make_config
from cdlib.papers.zhang2023 import FIDELITY, FaceWorld, Zhang2023Codec
from cdlib.papers.zhang2023 import analysis as an
from cdlib.papers.zhang2023 import model as zm
from cdlib.train import train

TINY = dict(N=8, M=8, Nh=8, n_down=3, struct_ch=(8, 8, 8, 8), gen_ch=(8, 8, 8, 8), style_ch=4, style_levels=2,
            style_dim=4, disc_ch=4, disc_layers=2)
S = 32


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return registry.create_model("zhang2023", "laptop", **{**TINY, **kw})


def images(n=2, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (n, S // 8, S // 8, 3), dtype=np.uint8)
    return [np.kron(b, np.ones((8, 8, 1), np.uint8)) for b in base]  # blocky, so that Canny finds edges


class Faces(torch.utils.data.Dataset):
    """A few FaceWorld faces (32 px, merged labels)."""

    def __init__(self, n=4):
        self.fw = FaceWorld("train", n=n, image_size=S, labels="merged", cache=False)

    def __len__(self):
        return len(self.fw)

    def __getitem__(self, i):
        return self.fw[i]


@pytest.fixture(scope="module")
def faces():
    return Faces(4)


# ------------------------------------------------------------------------------------------------ the model
def test_profiles_parts_and_fidelity():
    for profile, size in (("laptop", 64), ("paper", 256)):
        arch = registry.model_arch("zhang2023", profile)
        assert make_config("zhang2023", profile).image_size == size
        assert len(arch["struct_ch"]) == len(arch["gen_ch"]) == arch["n_down"] + 1
    assert registry.model_arch("zhang2023", "paper")["gen_ch"] == (1024, 512, 256, 128, 64)
    assert registry.model_arch("zhang2023", "paper")["style_dim"] == 64
    m = registry.create_model("zhang2023", "laptop")
    parts = m.part_parameters()
    assert sum(parts.values()) == sum(p.numel() for p in m.parameters())
    for src in (*FIDELITY.values(), *zm.PROFILE_SOURCES.values()):
        assert any(w in src for w in ("stated", "from the precursor code", "our choice")), src


def test_shapes_of_every_part():
    m = tiny()
    x = torch.rand(2, 3, S, S)
    out = m(x)
    g = S // 2 ** TINY["n_down"]
    x_hat = out["x_hat"].detach()
    assert x_hat.shape == x.shape and 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
    assert out["y_hat"].shape == (2, TINY["M"], g, g)
    assert out["likelihoods"]["z"].shape == (2, TINY["Nh"], g // 4, g // 4)
    assert out["t_hat"].shape == out["mu"].shape == out["logvar"].shape == (2, TINY["style_dim"])
    assert out["likelihoods"]["t"].shape == (2, TINY["style_dim"], 1, 1)
    assert [f.shape[-1] for f in out["feats"]] == [g * 2 ** k for k in range(TINY["n_down"] + 1)]
    assert out["edge_logits"].shape == (2, 1, S, S)
    d = m.discriminate(x, torch.zeros(2, 1, S, S))
    assert len(d) == 2 and all(f[-1].shape[1] == 1 for f in d)
    edges = zm.canny_edges(torch.from_numpy(np.stack(images())).permute(0, 3, 1, 2).float() / 255)
    assert edges.shape == (2, 1, S, S) and 0 < float(edges.mean()) < 0.5
    with pytest.raises(ValueError, match="multiples of 32"):
        m(torch.rand(1, 3, 40, 40))


def test_loss_terms_and_weights():
    m = tiny()
    cfg = make_config("zhang2023", "laptop", image_size=S)
    terms = m.loss_terms({"image": torch.rand(2, 3, S, S)}, cfg)
    w = m.loss_weights(cfg)
    assert set(w) == set(terms) == {"l1", "ssim", "kl", "latent", "edge", "bpp_structure", "bpp_texture", "gan", "fm"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert w["l1"] == 20.0 and w["ssim"] == 0.25 and w["kl"] == 0.01 and w["latent"] == 1.0 and w["gan"] == 1.0
    no_gan = make_config("zhang2023", "laptop", image_size=S, gan=False)
    assert {"gan", "fm"}.isdisjoint(m.loss_weights(no_gan)) and "gan" not in m.loss_terms(
        {"image": torch.rand(2, 3, S, S)}, no_gan)


# ------------------------------------------------------------------------------------------------ streams
@pytest.fixture(scope="module")
def codec():
    return Zhang2023Codec([tiny(1)], name="zhang2023", model_name="zhang2023")


def test_real_streams_hold_both_layers_and_decode_exactly(codec):
    model = codec.models[0]
    imgs = images(2)
    streams = codec.encode_batch(imgs, 0)
    header, strings = unpack(streams[0])
    assert header.codec == "zhang2023" and len(strings) == 3  # y, z | t in one container
    parts = codec.layer_bytes(streams[0])
    assert parts["header"] + parts["structure"] + parts["texture"] == parts["total"] == len(streams[0])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = model.compress(x)
        y_dec, t_dec = model.decode_latents(out["strings"], out["shape"])
        fwd = model.eval()(x)
        y_lat, t_lat = model.latents(x)
    assert torch.equal(y_dec, fwd["y_hat"]) and torch.equal(t_dec, fwd["t_hat"])  # roundtrip is exact
    assert torch.allclose(y_dec, y_lat, atol=1e-5) and torch.allclose(t_dec, t_lat, atol=1e-6)
    rec = codec.decode(streams[0])
    assert rec.shape == (S, S, 3) and rec.dtype == np.uint8
    # bytes against the likelihood estimate, per layer (reported: no threshold on an untrained model)
    est = codec.estimated_bits(imgs[0], 0)
    print(f"\nstructure: {parts['structure']} B vs {est['structure'] / 8:.1f} B estimated; "
          f"texture: {parts['texture']} B vs {est['texture'] / 8:.1f} B; header {parts['header']} B")
    assert est["structure"] > 0 and est["texture"] > 0


def test_structure_only_decode_and_texture_swap(codec):
    model = codec.models[0]
    a, b = codec.encode_batch(images(2, seed=3), 0)
    structure = codec.decode_structure(a)
    assert structure.shape == (S, S, 3) and structure.dtype == np.uint8
    header, strings = unpack(a)
    with torch.no_grad():
        y_hat = model.decode_structure([[strings[0]], [strings[1]]], codec.latent_grid(header))
        prior = model.synthesize(y_hat, torch.zeros(1, model.style_dim))
    assert np.array_equal(structure, (prior.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy())
    swapped = codec.decode_swapped(a, b)
    assert swapped.shape == (S, S, 3)
    assert np.array_equal(codec.decode_swapped(a, a), codec.decode(a))  # own texture: the plain decode
    assert codec.texture_of(b).shape == (1, model.style_dim)


def test_corrupt_and_truncated_streams_say_so(codec):
    s = codec.encode(images(1)[0], 0)
    for bad in (s[:-3], s[:5], s[:10] + bytes([s[10] ^ 0xFF]) + s[11:], b""):
        for call in (codec.decode, codec.decode_structure, codec.layer_bytes):
            with pytest.raises(ValueError):
                call(bad)
    from cdlib.bitstream import pack

    two = pack("zhang2023", unpack(s)[1][:2], S, S, 0, 0, 0.0, codec.cfg_hash(0))
    with pytest.raises(BitstreamError, match="needs 3"):
        codec.decode(two)


# ------------------------------------------------------------------------------------------------ training
def _gan_run(tmp_path, name, model, callback=None, steps=4):
    cfg = make_config("zhang2023", "laptop", image_size=S, batch_size=2, steps=steps, ckpt_every=2, log_every=1,
                      lr=1e-3, num_train=4, device="cpu")
    data = [{"image": torch.from_numpy(im).permute(2, 0, 1).float() / 255} for im in images(4, seed=5)]
    return train(model, cfg, out=Path(tmp_path) / name, dataset=data, progress=False, callback=callback)


def test_gan_step_alternates_and_a_killed_run_resumes_bit_exactly(tmp_path):
    full = tiny(0)
    res = _gan_run(tmp_path, "full.pt", full)
    rec = res["history"][0]
    assert {"g_loss", "d_loss", "gan", "fm", "l1", "bpp_structure", "bpp_texture", "aux_loss"} <= set(rec)
    ck = read_checkpoint(Path(tmp_path) / "full.pt")
    assert set(ck["optimizers"]) == {"g", "d", "aux"}

    def stop(step, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _gan_run(tmp_path, "cut.pt", tiny(0), callback=stop)
    assert read_checkpoint(Path(tmp_path) / "cut.pt")["step"] == 2
    resumed = tiny(123)
    rres = _gan_run(tmp_path, "cut.pt", resumed)
    assert rres["resumed_from"] == 2 and rres["history"] == res["history"]
    sa, sb = full.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ analysis
def tiny_analysis(seed=0, **kw):
    torch.manual_seed(seed)
    return registry.create_model("zhang2023_analysis", "laptop", codec=dict(TINY), width=16, depth=1, **kw)


def test_analysis_reads_latents_never_the_generator(faces):
    a = tiny_analysis()
    codec = get_codec("zhang2023", analysis=[a])
    imgs = [(faces[i]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(2)]
    streams = codec.encode_batch(imgs, 0)

    def boom(*args, **kw):
        raise AssertionError("the generator ran")

    a.codec.generator.forward = boom
    a.codec.g_s.forward = boom
    parsing = codec.analyse(streams, "parsing")
    assert parsing.shape == (2, 12, S, S)
    assert codec.analyse(streams, "attributes").shape == (2, len(an.ATTRIBUTES))
    lm = codec.analyse(streams, "landmarks")
    assert lm.shape == (2, 5, 2) and float(lm.min()) >= 0
    # decode-free outputs = the analysis model on the images (the same quantised latents)
    with torch.no_grad():
        x = torch.stack([faces[i]["image"] for i in range(2)])
        direct = a.eval().predict(x)
    assert torch.allclose(direct["attributes"], codec.analyse(streams, "attributes"), atol=1e-4)
    with pytest.raises(ValueError, match="analyses only"):
        codec.analyse(streams, "classification")
    with pytest.raises(ValueError):
        codec.analyse([streams[0][:-2]], "attributes")


def test_analysis_and_pixel_models_train_and_evaluate(tmp_path, faces):
    a = tiny_analysis()
    codec_before = {k: v.clone() for k, v in a.codec.state_dict().items()}
    cfg = make_config("zhang2023_analysis", "laptop", image_size=S, batch_size=2, steps=1, num_train=4, device="cpu")
    assert a.frozen_parts(cfg) == ["codec"]
    res = train(a, cfg, dataset=faces, progress=False)
    assert {"parsing", "attributes", "landmarks", "loss"} <= set(res["history"][-1])
    after = a.codec.state_dict()
    assert all(torch.equal(codec_before[k], after[k]) for k in codec_before)  # separate: the codec is frozen
    joint = make_config("zhang2023_analysis", "laptop", image_size=S, stage="joint", task_weight=0.5)
    terms = a.loss_terms({k: torch.stack([faces[0][k], faces[1][k]]) for k in faces[0]}, joint)
    assert set(a.loss_weights(joint)) <= set(terms) and "codec_bpp_structure" in terms and "codec_gan" not in terms
    assert a.frozen_parts(joint) == [f"codec.{p}" for p in an.JOINT_FROZEN]  # the decoder side

    torch.manual_seed(0)
    p = registry.create_model("zhang2023_pixel", "laptop", width=16, depth=1)
    pcfg = make_config("zhang2023_pixel", "laptop", image_size=S, batch_size=2, steps=1, num_train=4, device="cpu")
    train(p, pcfg, dataset=faces, progress=False)
    assert type(p.trunk) is type(a.trunk)
    for m in (a, p):
        scores = an.evaluate(m, faces, batch_size=2)
        assert set(scores) == {"miou", "pixel_accuracy", "attribute_accuracy", "landmark_nme"}
        assert 0 <= scores["miou"] <= 1 and 0 <= scores["attribute_accuracy"] <= 1 and scores["landmark_nme"] > 0


def test_a_codec_checkpoint_initialises_the_analysis_codec():
    c = tiny(7)
    c.update(force=True)
    a = tiny_analysis(1)
    a.load_state_dict(c.state_dict(), strict=False)
    sa, sc = a.codec.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sc)


def test_landmark_task_and_nme():
    t = torch.tensor([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]])
    task = an.Landmarks()
    assert task.score(t, t)["nme"] == 0
    shifted = t + torch.tensor([0.04, 0.0])
    assert abs(task.score(shifted, t)["nme"] - 0.1) < 1e-6  # 0.04 / inter-ocular 0.4
    from cdlib.eval import get_task, list_tasks

    assert get_task(task) is task and "landmarks" not in list_tasks()  # a task object, not registered


def test_diagram_shapes():
    from cdlib.diagrams import output_shapes

    m = tiny()
    shapes = output_shapes(m, torch.rand(1, 3, S, S), m.diagram_blocks())
    assert shapes["g_a"] == (1, TINY["M"], 4, 4) and shapes["g_s"] == (1, 8, S, S)
    assert shapes["texture_bottleneck"] == (1, TINY["style_dim"], 1, 1) and shapes["generator"] == (1, 3, S, S)


def test_checkpoints_load_back_into_codecs(tmp_path, faces):
    from cdlib.checkpoint import load_model

    a = tiny_analysis(2)
    cfg = make_config("zhang2023_analysis", "laptop", image_size=S, batch_size=2, steps=1, num_train=4, device="cpu")
    train(a, cfg, out=tmp_path / "a.pt", dataset=faces, progress=False)
    b = load_model(tmp_path / "a.pt")
    assert type(b) is type(a)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    codec = get_codec("zhang2023", analysis=[b])
    img = (faces[0]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert codec.analyse([codec.encode(img, 0)], "attributes").shape == (1, len(an.ATTRIBUTES))


@pytest.mark.slow
def test_gan_step_under_ddp_two_processes_gloo(tmp_path):
    """The paper profile's code path (its training config, the CelebAMask-HQ loader on a fake tree in the real
    layout), tiny widths, two processes (gloo): the generator and discriminator steps keep the ranks' weights
    equal."""
    import textwrap

    from test_paper_zhang2023 import _fake_celebamask
    from toys import run_torchrun

    _fake_celebamask(tmp_path / "celeba", n=20)
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f'''
        import os
        import numpy as np
        import torch
        torch.set_num_threads(1)
        from cdlib import registry
        from cdlib.config import make_config
        from cdlib.train import train
        rank = int(os.environ["RANK"])
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        model = registry.create_model("zhang2023", "paper", **{TINY!r})
        cfg = make_config("zhang2023", "paper", image_size={S}, batch_size=2, steps=2, ckpt_every=2, log_every=1,
                          num_workers=0, device="cpu", data_path={str(tmp_path / "celeba")!r})
        res = train(model, cfg, out={str(tmp_path)!r} + "/ddp.pt", progress=False)
        torch.save({{"state_dict": model.state_dict(), "metrics": res["metrics"]}},
                   {str(tmp_path)!r} + f"/rank{{rank}}.pt")
    '''))
    run_torchrun(script, timeout=300)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, r1["state_dict"][k]), k
    assert r0["metrics"] == r1["metrics"] and "d_loss" in r0["metrics"]


def test_task_views_feed_the_eval_pipelines(faces):
    from cdlib.eval import get_task

    torch.manual_seed(0)
    p = registry.create_model("zhang2023_pixel", "laptop", width=16, depth=1)
    imgs = np.stack([(faces[i]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(2)])
    assert get_task("parsing", num_classes=12).predict(p.for_task("parsing"), imgs).shape == (2, S, S)
    assert get_task("attributes").predict(p.for_task("attributes"), imgs).shape == (2, len(an.ATTRIBUTES))
    assert an.Landmarks().predict(p.for_task("landmarks"), imgs).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="valid tasks"):
        p.for_task("depth")


# ------------------------------------------------------------------------------------------------ serving and zoo
def test_export_leaves_the_discriminator_out_and_the_codec_decodes_the_same(tmp_path, faces):
    from cdlib.checkpoint import export_checkpoint, load_model

    cfg = make_config("zhang2023", "laptop", image_size=S, batch_size=2, steps=1, num_train=4, device="cpu")
    train(tiny(3), cfg, out=tmp_path / "full.pt", dataset=faces, progress=False)
    export_checkpoint(tmp_path / "full.pt", tmp_path / "served.pt", fp16=False)
    stored = read_checkpoint(tmp_path / "served.pt")
    assert not any(k.startswith("discriminator.") for k in stored["state_dict"])
    assert stored["exported"]["dropped_modules"] == ["discriminator"]
    served = load_model(tmp_path / "served.pt")
    assert served.discriminator is None and served.fingerprint == load_model(tmp_path / "served.pt").fingerprint
    full = load_model(tmp_path / "full.pt")
    imgs = images(2, seed=4)
    a, b = get_codec("zhang2023", model=full), get_codec("zhang2023", model=served)
    for img in imgs:
        assert np.array_equal(a.decode(a.encode(img, 0)), b.decode(b.encode(img, 0)))


def test_rate_fine_tuning_freezes_the_generator():
    m = tiny(0)
    cfg = make_config("zhang2023", "laptop", train_parts="rate")
    assert m.frozen_parts(cfg) == ["generator"]
    assert m.frozen_parts(make_config("zhang2023", "laptop")) == []
    with pytest.raises(ValueError, match="train_parts"):
        m.frozen_parts(make_config("zhang2023", "laptop", train_parts="decoder"))
    a = tiny_analysis(0)
    joint = make_config("zhang2023_analysis", "laptop", stage="joint")
    assert set(a.frozen_parts(joint)) == {f"codec.{p}" for p in an.JOINT_FROZEN}
    assert a.frozen_parts(make_config("zhang2023_analysis", "laptop")) == ["codec"]


def test_chapter_measurements_known_answers():
    import pandas as pd

    from cdlib.papers.zhang2023 import experiments as ex

    curve = pd.DataFrame({"quality": [0, 1, 2], "bpp": [0.1, 0.2, 0.4], "miou": [0.50, 0.545, 0.56]})
    raw = {"miou": 0.55}
    got = ex.paper_saving(curve, raw, "miou")  # 0.545 is within 1 point of 0.55, 0.50 is not
    assert got["bpp"] == 0.2 and got["saving"] == pytest.approx(1 - 0.2 / 24) and got["within"]
    assert not ex.paper_saving(curve, {"miou": 0.9}, "miou")["within"]
    assert ex.matched_point(curve, 0.25) == (1, 0.2)
    assert ex.matched_point(curve, 0.05) == (0, 0.1)  # nothing below: its lowest rate
    g = np.random.default_rng(1)  # 64-px faces-sized images: MS-SSIM's five scales need more than 32 px
    same = np.stack([np.kron(b, np.ones((8, 8, 1), np.uint8)) for b in g.integers(0, 256, (3, 8, 8, 3), np.uint8)])
    scores = ex.perceptual_scores(same, same)
    assert scores["psnr"] > 90 and scores["ms_ssim"] == pytest.approx(1.0)
    assert scores["gmsd"] == pytest.approx(0.0, abs=1e-6) and scores["haarpsi"] == pytest.approx(1.0, abs=1e-4)
    noisy = np.clip(same.astype(int) + np.random.default_rng(0).integers(-40, 40, same.shape), 0, 255).astype(np.uint8)
    worse = ex.perceptual_scores(same, noisy)
    assert worse["psnr"] < scores["psnr"] and worse["gmsd"] > 0.01 and worse["haarpsi"] < 0.99


def test_layer_report_counts_every_byte():
    from cdlib.papers.zhang2023 import experiments as ex

    m = tiny(5).eval()
    codec = get_codec("zhang2023", model=m)
    imgs = np.stack(images(3, seed=2))
    rep = ex.layer_report(codec, imgs)
    total = sum(len(codec.encode(im, 0)) for im in imgs)
    assert rep["stream bytes"].sum() == total
    assert set(rep["layer"]) == {"structure", "texture", "header"}
    assert rep.loc[rep["layer"] != "header", "estimated bytes"].gt(0).all()
