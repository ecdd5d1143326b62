"""tang2025 (Paper C, DICM): the parts and their shapes in both profiles, the parameter table against the
official counts, the entropy model's real bitstreams (exact across batch sizes and thread counts), the
feature codec and its errors on bad streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdlib.bitstream import BitstreamError, pack, unpack
from cdlib.codecs import get_codec
from cdlib.losses import bpp_of_likelihoods
from cdlib.papers.tang2025 import Tang2025, Tang2025Codec
from cdlib.papers.tang2025.compression import GlobalLocalFilter, GnConv
from cdlib.papers.tang2025.entropy import ContextModel, EntropyModel, checkerboard, diamond_buckets
from cdlib.papers.tang2025.model import FIDELITY, OFFICIAL_PARAMS, parameter_table
from cdlib.registry import create_model

LAPTOP_ENTROPY = dict(M=48, dim=64, heads=2, dim_head=32, mlp_ratio=2, ctx_depth=2)


def _model(profile="laptop", seed=0):
    torch.manual_seed(seed)
    return create_model("tang2025", profile).eval()


def _updated(module):
    """CompressAI's CDF tables for every Gaussian conditional below ``module``."""
    from compressai.entropy_models import GaussianConditional
    from compressai.models.base import get_scale_table

    for m in module.modules():
        if isinstance(m, GaussianConditional):
            m.update_scale_table(get_scale_table(), force=True)
    return module


def _smooth_images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def laptop():
    m = _model("laptop")
    m.update(force=True)
    return m


@pytest.fixture(scope="module")
def paper():
    return _model("paper")


# --------------------------------------------------------------------------- shapes

def _part_shapes(m: Tang2025, x: torch.Tensor) -> dict:
    with torch.no_grad():
        f1 = m.head(x)
        latent = m.re.encoder(f1)
        f2 = m.re.decoder(torch.round(latent))
        y = m.g_a(f2)
        z = m.entropy.h_a(y)
        hyper = m.entropy.h_s(torch.round(z))
        ctx = m.entropy.context(torch.round(y))
        params = m.entropy.param_net(torch.cat([ctx, hyper], 1))
        f3 = m.g_s(torch.round(y))
        l4 = m.tail(f3)
    return {k: tuple(v.shape[1:]) for k, v in dict(f1=f1, latent=latent, f2=f2, y=y, z=z, hyper=hyper, ctx=ctx,
                                                   params=params, f3=f3, layer4=l4).items()}


def test_paper_profile_official_shapes_at_256(paper):
    """The official shapes at 256 px: f1 256x64x64, RE latent 192x8x8, y 192x16x16, z 192x4x4."""
    s = _part_shapes(paper, torch.rand(1, 3, 256, 256))
    assert s == {"f1": (256, 64, 64), "latent": (192, 8, 8), "f2": (256, 64, 64), "y": (192, 16, 16),
                 "z": (192, 4, 4), "hyper": (384, 16, 16), "ctx": (384, 16, 16), "params": (384, 16, 16),
                 "f3": (256, 64, 64), "layer4": (2048, 8, 8)}


@pytest.mark.parametrize("profile,size,expected", [
    ("paper", 64, {"f1": (256, 16, 16), "latent": (192, 2, 2), "y": (192, 4, 4), "z": (192, 1, 1),
                   "f3": (256, 16, 16), "layer4": (2048, 2, 2)}),
    ("laptop", 64, {"f1": (32, 16, 16), "latent": (48, 2, 2), "y": (48, 4, 4), "z": (48, 1, 1),
                    "f3": (32, 16, 16), "layer4": (256, 2, 2)}),
    ("laptop", 128, {"f1": (32, 32, 32), "latent": (48, 4, 4), "y": (48, 8, 8), "z": (48, 2, 2),
                     "f3": (32, 32, 32), "layer4": (256, 4, 4)}),
])
def test_part_shapes(profile, size, expected, request):
    m = request.getfixturevalue(profile)
    s = _part_shapes(m, torch.rand(2, 3, size, size))
    assert {k: s[k] for k in expected} == expected
    assert s["f2"] == s["f1"] and s["hyper"] == s["ctx"] and s["params"][0] == 2 * s["y"][0]


@pytest.mark.parametrize("profile", ["laptop", "paper"])
def test_forward_outputs(profile, request):
    m = request.getfixturevalue(profile)
    with torch.no_grad():
        out = m(torch.rand(2, 3, 64, 64))
        pre = m(torch.rand(2, 3, 64, 64), codec=False)
    c1 = m.head.out_channels
    assert out["f3"].shape == out["f2"].shape == out["f1"].shape == (2, c1, 16, 16)
    assert set(out["likelihoods"]) == {"y", "z"} and set(out["re_likelihoods"]) == {"re"}
    assert out["embedding"].shape == (2, m.proj.out.out_features)
    assert pre["f3"] is None and pre["likelihoods"] == {} and pre["feat"].shape == out["feat"].shape
    with pytest.raises(ValueError, match="multiples of 64"):
        m(torch.rand(1, 3, 64, 96))


def test_gnconv_orders_and_global_filter():
    torch.manual_seed(0)
    for order, dim in [(2, 16), (3, 16), (4, 32)]:
        g = GnConv(dim, order)
        assert g.dims == [dim // 2 ** i for i in range(order)][::-1]
        assert len(g.pws) == order - 1
        assert g(torch.rand(1, dim, 8, 8)).shape == (1, dim, 8, 8)
    g = GnConv(32, 4, global_filter=True)
    assert isinstance(g.dwconv, GlobalLocalFilter)
    for hw in [(8, 8), (6, 10), (24, 24)]:  # the 24x13 filter is resized to any map
        assert g(torch.rand(1, 32, *hw)).shape == (1, 32, *hw)
    with pytest.raises(ValueError, match="divisible"):
        GnConv(20, 4)


# --------------------------------------------------------------------------- parameters

def test_parameter_table_matches_official_counts(paper):
    table = parameter_table(paper)
    lines = [f"{k:12s} ours {v['ours'] / 1e6:7.3f} M" + (f"  official {v['official_M']:6.2f} M "
                                                          f"({(v['ours'] / 1e6 / v['official_M'] - 1) * 100:+.2f}%)"
                                                          if v["official_M"] else "")
             for k, v in table.items()]
    print("\n".join(lines))
    for part, official in OFFICIAL_PARAMS.items():
        ours = table[part]["ours"] / 1e6
        assert abs(ours - official) / official < 0.02, (part, ours, official)
    assert table["total"]["ours"] == sum(p.numel() for p in paper.parameters())


def test_laptop_is_small(laptop):
    table = parameter_table(laptop)
    served = table["total"]["ours"] - table["moco_key"]["ours"]  # the key encoder is left out of exports
    assert served < 3e6 and table["moco_key"]["ours"] < 2e6, table


def test_fidelity_table():
    assert len(FIDELITY) >= 10 and all(isinstance(v, str) and v for v in FIDELITY.values())


# --------------------------------------------------------------------------- entropy model

def test_diamond_buckets():
    b = diamond_buckets(5, 5, 7)
    centre = 2 * 5 + 2
    assert b[centre, centre] == 3 * 7 + 3  # zero offset -> middle of the 7x7 table
    assert b[0, 24] == 0  # offset (4, 4): L1 distance 8 > 3, the shared far bucket
    assert b[centre, centre + 1] == 3 * 7 + 4


def test_context_model_sees_only_visible_positions():
    torch.manual_seed(0)
    ctx = ContextModel(8, dim=32, depth=2, heads=2, dim_head=16, mlp_ratio=2).eval()
    y = torch.randn(2, 8, 6, 6)
    anchors = checkerboard(6, 6, "odd")
    y2 = y.clone()
    y2[..., ~anchors] += torch.randn_like(y2[..., ~anchors])  # change the non-anchors only
    with torch.no_grad():
        a, b = ctx(y), ctx(y2)
    assert torch.equal(a, b)  # non-anchors never see other non-anchors
    assert (a[..., anchors] == 0).all()  # anchors are coded from the hyperprior alone
    assert anchors[0, 1] and not anchors[0, 0]  # anchors at i + j odd, as the official test mask


@pytest.fixture(scope="module")
def entropy():
    torch.manual_seed(0)
    return _updated(EntropyModel(**LAPTOP_ENTROPY).eval())


def _latent(n, seed=1, hw=(8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 48, *hw, generator=g) * 2.0


def test_entropy_bitstreams_exact_across_batch_sizes_and_threads(entropy):
    y = _latent(3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            batch = entropy.compress(y)
        assert len(batch["strings"]) == 3 and all(len(s) == 3 for s in batch["strings"])
        zs = tuple(batch["shape"]["hyper"])
        for enc_threads in (1, 2):
            torch.set_num_threads(enc_threads)
            for i in range(3):  # the same bytes when an image is coded alone
                with torch.no_grad():
                    one = entropy.compress(y[i:i + 1])
                assert [s[0] for s in one["strings"]] == [s[i] for s in batch["strings"]]
        for dec_threads in (1, 2):
            torch.set_num_threads(dec_threads)
            with torch.no_grad():
                whole = entropy.decompress(batch["strings"], zs)["y_hat"]
                singles = [entropy.decompress([[s[i]] for s in batch["strings"]], zs)["y_hat"] for i in range(3)]
            assert torch.equal(whole, batch["y_hat"])
            assert torch.equal(torch.cat(singles), batch["y_hat"])
    finally:
        torch.set_num_threads(threads)
    # y_hat is the rounded residual around the predicted mean: within half a step of y
    assert float((batch["y_hat"] - y).abs().max()) <= 0.5 + 1e-5


def test_entropy_bytes_against_likelihood_estimate(entropy):
    """Untrained, the estimate and the stream differ where the predicted scales miss the data (the 16-bit CDF
    floor and the 1e-9 likelihood bound disagree in the tails): printed only."""
    y = _latent(2, seed=3)
    with torch.no_grad():
        est_bits = sum(float(-torch.log2(lk).sum()) for lk in entropy(y)["likelihoods"].values())
        strings = entropy.compress(y)["strings"]
    real_bits = 8 * sum(len(s) for lst in strings for s in lst)
    print(f"entropy model (untrained, 2 x 48x8x8): {real_bits} bits in the strings, {est_bits:.0f} estimated "
          f"({real_bits / est_bits:.3f})")
    assert 0.5 < real_bits / est_bits < 1.5


def test_entropy_bytes_within_2_percent_when_the_model_fits_the_data():
    """With the predicted distribution equal to the data's (means 0, scales 2, y ~ N(0, 2^2)), the three rANS
    strings are within 2% of the likelihood estimate at the paper's y grid (16x16)."""
    import math

    torch.manual_seed(0)
    em = _updated(EntropyModel(**LAPTOP_ENTROPY).eval())
    last = em.param_net.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[48:] = math.log(2.0)  # (means, log-scales) = (0, log 2)
        y = _latent(2, seed=0, hw=(16, 16))  # N(0, 2^2)
        est = sum(float(-torch.log2(lk).sum()) for lk in em(y)["likelihoods"].values())
        strings = em.compress(y)["strings"]
    real = 8 * sum(len(s) for lst in strings for s in lst)
    print(f"matched model, 2 x 48x16x16: {real} bits in the strings, {est:.0f} estimated ({real / est:.4f})")
    assert abs(real / est - 1) < 0.02


def test_entropy_training_forward(entropy):
    entropy.train()
    try:
        torch.manual_seed(0)
        y = _latent(2).requires_grad_()
        out = entropy(y)
        assert out["likelihoods"]["y"].shape == y.shape and out["likelihoods"]["z"].shape == (2, 48, 2, 2)
        sum(-torch.log2(v).sum() for v in out["likelihoods"].values()).backward()
        assert y.grad is not None and torch.isfinite(y.grad).all()
    finally:
        entropy.eval()


# --------------------------------------------------------------------------- codec

@pytest.fixture(scope="module")
def codec(laptop):
    return get_codec("tang2025", model=laptop)


def _image(h=70, w=100, seed=0):
    x = _smooth_images(1, 128, seed)[0, :, :h, :w]
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_codec_roundtrip_gives_features(codec, laptop):
    img = _image()
    stream = codec.compress(img, 0)
    header, strings = unpack(stream)
    assert header.codec == "tang2025" and len(strings) == 3
    feats = codec.decompress(stream)
    assert isinstance(feats, torch.Tensor) and feats.shape == (32, 18, 25)  # ceil(70/4), ceil(100/4)
    # the model's own path: compress the padded image, decode the latent, run g_s
    from cdlib.images import pad_to, to_tensor

    xp, _, _ = pad_to(to_tensor([img]), 64)
    enc = laptop.compress(xp)
    y_hat = laptop.decode_latent([[s] for s in strings], enc["shape"])
    assert torch.equal(y_hat, enc["y_hat"])
    with torch.no_grad():
        ref = laptop.g_s(y_hat)[0, :, :18, :25]
    assert torch.allclose(feats, ref, atol=1e-6)
    batch = codec.decode_batch([stream, codec.compress(_image(seed=1), 0)], batch_size=2)
    assert torch.allclose(batch[0], feats, atol=1e-5)


def test_codec_bytes_against_estimate(codec, laptop):
    x = _smooth_images(2, 128, seed=5)
    imgs = [(xi.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for xi in x]
    streams = codec.encode_batch(imgs, 0)
    from cdlib.images import to_tensor

    with torch.no_grad():
        est = float(bpp_of_likelihoods(laptop(to_tensor(imgs))["likelihoods"], 2 * 128 * 128))
    payload = sum(len(s) - unpack(s)[0].size for s in streams) * 8 / (2 * 128 * 128)
    print(f"laptop (untrained) 128 px: payload {payload:.4f} bpp, estimate {est:.4f} bpp ({payload / est:.3f})")
    assert payload > 0 and est > 0


def test_codec_bad_streams_raise_clear_errors(codec):
    stream = codec.compress(_image(), 0)
    header, strings = unpack(stream)

    def repack(strs):
        return pack("tang2025", strs, header.height, header.width, header.pad_h, header.pad_w, header.quality,
                    codec.cfg_hash(0))

    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(stream[:-3])  # truncated
    flipped = bytearray(stream)
    flipped[-5] ^= 0x40
    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(bytes(flipped))
    with pytest.raises(BitstreamError, match="needs 3"):
        codec.decompress(repack(strings[:2]))
    with pytest.raises(BitstreamError, match="need at least"):
        codec.decompress(repack([strings[0][:8], strings[1], strings[2]]))
    assert issubclass(BitstreamError, ValueError)


def test_codec_needs_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_ZOO", str(tmp_path / "zoo"))
    with pytest.raises(ValueError, match="make checkpoints"):
        get_codec("tang2025")
    assert Tang2025Codec.tasks == ("classification", "detection", "instance_segmentation")


def test_dicm_is_another_name_of_tang2025(codec, laptop):
    from cdlib.config import make_config

    assert create_model("dicm", "laptop").model_name == "tang2025"
    assert make_config("dicm", "laptop").model == "tang2025"
    c = get_codec("dicm", model=laptop)
    assert c.name == "tang2025" and isinstance(c, Tang2025Codec)


# --------------------------------------------------------------------------- training hooks

def test_stage_losses_and_frozen_parts(laptop):
    from types import SimpleNamespace

    m = _model("laptop").train()
    batch = {"image": _smooth_images(2, 64)}
    for stage, keys in [("re", {"dist", "rate"}), ("codec", {"dist", "rate", "feat2", "feat3", "feat4"})]:
        cfg = SimpleNamespace(stage=stage)
        terms = m.loss_terms(batch, cfg)
        weights = m.loss_weights(cfg)
        assert set(terms) == set(weights) == keys
        loss = sum(weights[k] * terms[k] for k in weights)
        assert torch.isfinite(loss)
        loss.backward()
        frozen = m.frozen_parts(cfg)
        assert ("re" in frozen) == (stage == "codec") and ("entropy" in frozen) == (stage == "re")
        m.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="valid values"):
        m.loss_terms(batch, SimpleNamespace(stage="nope"))


def test_two_steps_through_the_loop_then_a_codec_from_the_checkpoint(tmp_path):
    """Stage 4 through cdlib.train (two steps), then the checkpoint as a codec: streams decode exactly."""
    from cdlib.checkpoint import load_model
    from cdlib.config import make_config
    from cdlib.train import train

    torch.manual_seed(0)
    cfg = make_config("tang2025", "laptop", stage="codec", steps=2, batch_size=2, image_size=64,
                      dataset="shapes", num_train=8, warmup_steps=0)
    res = train(create_model("tang2025", "laptop"), cfg, out=tmp_path / "c.pt")
    assert res["step"] == 2 and all(np.isfinite(v) for v in res["metrics"].values())
    model = load_model(tmp_path / "c.pt")
    codec = get_codec("tang2025", checkpoint=str(tmp_path / "c.pt"))
    img = _image(64, 64)
    feats = codec.decompress(codec.compress(img, 0))
    assert feats.shape == (32, 16, 16) and torch.isfinite(feats).all()
    assert model.model_name == "tang2025"
