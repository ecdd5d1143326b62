import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cdlib import eval as ev  # noqa: E402
from cdlib import plots  # noqa: E402
from cdlib.codecs.base import Codec  # noqa: E402

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [26.0, 29.0, 32.0, 35.0, 38.0]


def curve(rates=RATES, quality=PSNRS, metric="psnr"):
    return pd.DataFrame({"bpp": rates, metric: quality})


class BitPlaneCodec(Codec):
    """Keeps the ``quality`` most significant bits of every sample, stored raw (3*q bpp payload)."""

    name = "bitplane"
    label = "bit planes"
    qualities = (1, 2, 4, 8)

    def _encode(self, image, quality):
        bits = np.unpackbits(image[..., None], axis=-1)[..., : int(quality)]
        return [np.packbits(bits).tobytes()], 0, 0

    def _decode(self, strings, header):
        q = int(header.quality)
        shape = (header.height, header.width, 3)
        bits = np.unpackbits(np.frombuffer(strings[0], np.uint8))[: int(np.prod(shape)) * q].reshape(*shape, q)
        full = np.zeros((*shape, 8), np.uint8)
        full[..., :q] = bits
        return np.packbits(full, axis=-1)[..., 0]


# --------------------------------------------------------------------------- BD


def test_bd_rate_self_is_zero():
    assert abs(ev.bd_rate(curve(), curve())) < 1e-6
    assert abs(ev.bd_quality(curve(), curve(), metric="psnr")) < 1e-6


def test_bd_rate_ten_percent_fewer_bits():
    test = curve(rates=[r * 0.9 for r in RATES])
    assert ev.bd_rate(curve(), test) == pytest.approx(-10.0, abs=0.5)
    assert ev.bd_quality(curve(), test, metric="psnr") > 0


def test_bd_quality_accuracy_self_is_zero():
    acc = curve(quality=[0.3, 0.5, 0.7, 0.8, 0.85], metric="accuracy")
    assert abs(ev.bd_quality(acc, acc, metric="accuracy")) < 1e-9


def test_non_monotonic_curve():
    acc = [0.3, 0.5, 0.45, 0.7, 0.8, 0.85]  # point 2 has more bits but lower accuracy than point 1
    bad = curve(rates=[0.1, 0.2, 0.3, 0.4, 0.8, 1.6], quality=acc, metric="accuracy")
    val, info = ev.bd_rate(bad, bad, metric="accuracy", return_info=True)
    assert info["anchor_dropped"] == [2] and info["anchor_points"] == 5
    assert abs(val) < 1e-6
    with pytest.raises(ValueError, match="not strictly increasing"):
        ev.bd_rate(bad, bad, metric="accuracy", monotone="raise")
    iso = ev.clean_curve(bad["bpp"], bad["accuracy"], "isotonic")
    assert np.all(np.diff(iso["quality"]) > 0) and iso["merged"] == [[1, 2]]


def test_too_few_points_raises():
    short = curve(rates=RATES[:3], quality=PSNRS[:3])
    with pytest.raises(ValueError, match="at least 4"):
        ev.bd_rate(short, curve())


def test_small_overlap_warns():
    far = curve(quality=[q + 10 for q in PSNRS])
    with pytest.warns(UserWarning, match="overlap"):
        ev.bd_rate(curve(), far)


def test_bd_table():
    table = ev.bd_table({"a": curve(), "b": curve(rates=[r * 0.9 for r in RATES])}, anchor="a")
    assert list(table["name"]) == ["a", "b"]
    assert table["bd_rate"].iloc[1] == pytest.approx(-10.0, abs=0.5)


# --------------------------------------------------------------------------- metrics


def test_psnr():
    a = np.zeros((8, 8, 3), np.uint8)
    assert ev.psnr(a, a) == float("inf")
    b = a + 5  # MSE 25
    assert ev.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25))
    x = torch.rand(2, 3, 8, 8)
    out = ev.psnr(x, (x + 0.1))
    assert out.shape == (2,) and torch.allclose(out, torch.full((2,), 20.0, dtype=torch.float64), atol=1e-4)


def test_ms_ssim():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (176, 176, 3), dtype=np.uint8)
    assert ev.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="161"):
        ev.ms_ssim(img[:64, :64], img[:64, :64])


def test_accuracy_and_map():
    assert ev.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 5.0, 50.0, 40.0]])
    labels = torch.tensor([0, 1])
    res = ev.mean_ap([{"boxes": boxes, "scores": torch.ones(2), "labels": labels}],
                     [{"boxes": boxes, "labels": labels}])
    assert res["map"] == pytest.approx(1.0) and res["map_50"] == pytest.approx(1.0)


def test_info_bound():
    assert ev.info_bound_bits(10) == pytest.approx(3.3219, abs=1e-3)
    assert ev.info_bound_bpp(10, 32, 32) == pytest.approx(3.3219 / 1024, abs=1e-5)


# --------------------------------------------------------------------------- curves and files


def _images(n=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_rd_curve_fake_codec():
    df = ev.rd_curve(BitPlaneCodec(), _images(), progress=False)
    assert list(df["quality"]) == [1, 2, 4, 8] and (df["n_images"] == 3).all()
    assert np.all(np.diff(df["bpp"]) > 0) and np.all(np.diff(df["psnr"]) > 0)
    assert df["bpp_payload"].tolist() == pytest.approx([3.0, 6.0, 12.0, 24.0])
    assert (df["bpp"] > df["bpp_payload"]).all()
    assert df["psnr"].iloc[-1] == float("inf")  # 8 bit planes: lossless
    assert df["ms_ssim"].isna().all() and df["note"].str.contains("ms_ssim").all()


def test_rd_curve_mixed_sizes():
    images = _images(2, 16) + _images(1, 24)
    df = ev.rd_curve(BitPlaneCodec(), images, qualities=[2, 4], progress=False)
    assert df["bpp_payload"].tolist() == pytest.approx([6.0, 12.0])


def test_rate_accuracy_curve_and_raw_point():
    images = np.stack(_images(6, 8))
    labels = (images.reshape(6, -1).mean(1) > 127).astype(np.int64)

    def classifier(x):  # brightness classifier on (B, 3, H, W) in [0, 1]
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)

    df = ev.rate_accuracy_curve(BitPlaneCodec(), images, labels, classifier, qualities=[1, 8], batch_size=4,
                                progress=False)
    assert set(df.columns) >= {"codec", "label", "quality", "bpp", "accuracy", "psnr", "n_images"}
    assert df["accuracy"].iloc[-1] == 1.0
    raw = ev.raw_rgb_point(images, labels, classifier)
    assert raw["bpp"] == 24.0 and raw["accuracy"] == 1.0


def test_json_roundtrip(tmp_path, monkeypatch):
    df = pd.DataFrame({"bpp": [0.1, 0.2], "psnr": [30.0, float("inf")], "ms_ssim": [np.nan, 0.9]})
    path = ev.save_json({"curve": df, "n": np.int64(3)}, tmp_path / "a" / "b.json")
    back = ev.load_json(path)
    assert back["n"] == 3 and back["curve"][1]["psnr"] is None and back["curve"][0]["bpp"] == 0.1
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    assert ev.results_dir("laptop") == tmp_path / "laptop"


def test_time_call():
    assert ev.time_call(sum, [1, 2, 3], repeat=2, warmup=0) >= 0


# --------------------------------------------------------------------------- plots


def test_plots_return_figures():
    from matplotlib.figure import Figure

    plots.set_style()
    df = pd.concat([curve().assign(label="A"), curve(rates=[r * 0.9 for r in RATES]).assign(label="B")])
    acc = df.assign(accuracy=np.linspace(0.2, 0.9, len(df)))
    figs = [
        plots.rd_plot(df, title="rd"),
        plots.rate_accuracy_plot(acc, bound_bpp=ev.info_bound_bpp(10, 32, 32),
                                 raw_point={"bpp": 24.0, "accuracy": 0.95, "label": "raw RGB"}),
        plots.image_grid(_images(3, 8) + [torch.rand(3, 8, 8)], titles=["a", "b", "c", "d"], ncols=2),
        plots.loss_plot([{"step": i, "mse": 1.0 / (i + 1), "bpp": 0.5} for i in range(5)]),
        plots.bar_table(pd.DataFrame({"name": ["a", "b"], "bd_rate": [0.0, -10.0]}), x="name", y="bd_rate"),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    labels = figs[1].axes[0].get_legend_handles_labels()[1]
    assert plots.BOUND_LABEL in labels
    for f in figs:
        plt.close(f)
