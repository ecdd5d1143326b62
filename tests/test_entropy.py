"""cdlib.eval.entropy: the rANS cost model matches CompressAI's coder byte for byte (up to the flush)."""
import math

import numpy as np
import pytest
import torch

import cdlib
from cdlib.eval import entropy as E


@pytest.fixture(scope="module")
def hyperprior():
    torch.manual_seed(0)
    m = cdlib.create_model("hyperprior", profile="laptop").eval()
    m.update(force=True)
    return m


def test_cdf_row_is_a_16_bit_table_with_an_escape(hyperprior):
    row = E.cdf_row(hyperprior.entropy_bottleneck, 3)
    assert row["value"].iloc[-1] == "escape"
    assert row["count"].min() >= 1  # every value, and the escape, keeps a non-zero probability
    assert row["count"].sum() == 1 << E.RANS_PRECISION
    assert row["p"].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="row must be"):
        E.cdf_row(hyperprior.entropy_bottleneck, 10_000)


def test_symbol_costs_follow_the_coder_and_the_flush_is_32_to_64_bits(hyperprior):
    em = hyperprior.gaussian_conditional
    cdfs, lengths, offsets = E._tables(em)
    rng = np.random.default_rng(0)
    for n in (1, 10, 500):
        idx = rng.integers(0, len(cdfs), n).tolist()
        sym = rng.integers(-6, 7, n).tolist()
        sym[0] = 100_000  # far outside every row: an escape with bypass digits
        costs = E.symbol_costs(sym, idx, cdfs, lengths, offsets)
        assert costs["escape"].iloc[0] and costs["bypass_bits"].iloc[0] > 0
        string = E.rans_encode(sym, idx, cdfs, lengths, offsets)
        flush = 8 * len(string) - costs["bits"].sum()
        assert 31.9 <= flush <= 64 + 32, (n, flush)  # final state (32..64 bits), rounded up to a 32-bit word
        # the string decodes back to the symbols with CompressAI's decoder
        dec = E._ans().RansDecoder().decode_with_indexes(string, idx, cdfs, lengths, offsets)
        assert list(dec) == sym


def test_bypass_digits():
    cdfs, lengths, offsets = [[0, 30000, 65535, 65536]], [4], [0]  # values 0, 1, then the escape
    c = E.symbol_costs([0, 1, 2, 3, -1, 40, 10**6], [0] * 7, cdfs, lengths, offsets)
    assert c["escape"].tolist() == [False, False, True, True, True, True, True]
    # raw = 2 (v - 2) above, -2 v - 1 below; count digit(s) then ceil(bits(raw) / 4) digits of 4 bits
    assert c["bypass_bits"].tolist() == [0, 0, 4, 8, 8, 12, 4 * (1 + 6)]
    assert c["table_bits"].iloc[0] == pytest.approx(16 - math.log2(30000))
    with pytest.raises(ValueError, match="indexes"):
        E.symbol_costs([0, 1], [0], cdfs, lengths, offsets)


def test_worked_example_model_bits(hyperprior):
    for em, row in ((hyperprior.entropy_bottleneck, 0), (hyperprior.gaussian_conditional, 20)):
        df, string = E.worked_example(em, row, [0, 1, -1, 0, 50])
        assert len(string) % 4 == 0 and len(string) >= 8
        assert df["escape"].tolist() == [False, False, False, False, True]
        assert (df["model_bits"] > 0).all() and df["model_bits"].iloc[-1] <= -math.log2(1e-9) + 1e-6
        # in-table symbols: the 16-bit table and the model agree to within the count rounding
        ok = ~df["escape"] & (df["count"] > 64)
        assert np.allclose(df.loc[ok, "table_bits"], df.loc[ok, "model_bits"], atol=0.1)


def test_rate_breakdown_adds_up_to_the_codec_strings(hyperprior):
    from cdlib.bitstream import unpack
    from cdlib.codecs import get_codec

    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    bt = E.breakdown_table(hyperprior, [img], stride=64)
    assert bt["latent"].tolist() == ["y", "z"]
    codec = get_codec("hyperprior", models=[hyperprior])
    _, strings = unpack(codec.encode(img, 0))
    assert sorted(8 * len(s) for s in strings) == sorted(bt["coded_bits"].tolist())
    assert np.allclose(bt["table_bits"] + bt["escape_bits"] + bt["flush_bits"], bt["coded_bits"])
    assert ((bt["flush_bits"] > 31) & (bt["flush_bits"] <= 96)).all()
    assert np.allclose(bt["table_floor_bits"], 16 * bt["floor_symbols"])  # a count of 1 costs 16 bits
    assert (bt["symbols"] == [96 * 4 * 4, 64 * 1 * 1]).all()
    with pytest.raises(ValueError, match="one image"):
        E.coded_symbols(hyperprior, torch.zeros(2, 3, 64, 64))


def test_side_information_ablation(hyperprior):
    rng = np.random.default_rng(2)
    imgs = [(rng.random((64, 64, 3)) * 255).astype(np.uint8), (rng.random((40, 70, 3)) * 255).astype(np.uint8)]
    r = E.side_information_ablation(hyperprior, imgs, stride=64)
    assert r["pixels"] == 64 * 64 + 40 * 70
    bt = r["breakdown"]
    assert len(bt) == 4 and r["z_bits"] == bt.loc[bt["latent"] == "z", "coded_bits"].sum()
    assert r["y_bits"] == bt.loc[bt["latent"] == "y", "coded_bits"].sum()
    assert r["factorized_bits"] >= 0 and np.isfinite(r["psnr_hyperprior"]) and np.isfinite(r["psnr_factorized"])
