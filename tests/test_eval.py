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
from cdlib.bitstream import unpack  # noqa: E402
from cdlib.codecs.base import AnalysisNotSupported, Codec  # noqa: E402

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


class AnalysingBitPlaneCodec(BitPlaneCodec):
    """Classifies its streams by brightness from the most significant bit plane of the payload alone."""

    tasks = ("classification",)

    def analyse(self, streams, task):
        self.check_task(task)
        logits = []
        for s in streams:
            header, strings = unpack(s)
            q, n = int(header.quality), header.height * header.width * 3
            msb = np.unpackbits(np.frombuffer(strings[0], np.uint8))[: n * q].reshape(n, q)[:, 0]
            m = float(msb.mean())  # share of samples >= 128
            logits.append([0.5 - m, m - 0.5])
        return torch.tensor(logits)


class NoPixelsCodec(AnalysingBitPlaneCodec):
    """Its pixel decoder must never run."""

    def decode(self, data):
        raise AssertionError("the pixel decoder ran")

    def decode_batch(self, streams, batch_size=None):
        raise AssertionError("the pixel decoder ran")


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


def test_min_rate_for_accuracy():
    bpp, acc = [0.4, 0.1, 0.2, 0.8, float("nan")], [0.9, 0.5, 0.9, 0.95, 0.99]
    assert ev.min_rate_for_accuracy(bpp, acc, 0.9) == 0.2  # not the first point in the list
    assert ev.min_rate_for_accuracy(bpp, acc, 0.95) == 0.8  # the NaN-rate point does not count
    assert math.isnan(ev.min_rate_for_accuracy(bpp, acc, 0.999))


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


def _bright(n=6, size=8, seed=0):
    """Images and labels: 1 when most samples are >= 128 (what both brightness classifiers see)."""
    images = np.stack(_images(n, size, seed))
    labels = ((images >= 128).reshape(n, -1).mean(1) > 0.5).astype(np.int64)
    return images, labels


def _brightness_classifier(x):  # (B, 3, H, W) in [0, 1] -> 2 logits
    m = (x >= 128 / 255).float().mean(dim=(1, 2, 3))
    return torch.stack([0.5 - m, m - 0.5], dim=1)


CLASSIFICATION_COLUMNS = ["codec", "label", "quality", "bpp", "bpp_payload", "accuracy", "psnr", "n_images"]


def test_task_curve_decode_then_classify_and_raw_point():
    images, labels = _bright()
    codec = BitPlaneCodec()
    pipe = ev.DecodeThenAnalyse(codec, _brightness_classifier)
    df = ev.task_curve(pipe, images, labels, "classification", qualities=[1, 8], batch_size=4, progress=False)
    assert list(df.columns) == CLASSIFICATION_COLUMNS
    assert df["quality"].tolist() == [1, 8] and (df["n_images"] == 6).all()
    assert df["accuracy"].tolist() == [1.0, 1.0]  # the most significant bit plane is all the classifier uses
    assert df["bpp_payload"].tolist() == pytest.approx([3.0, 24.0])
    assert df["psnr"].iloc[-1] == float("inf") and df["psnr"].iloc[0] < 20
    streams = [codec.encode(im, 1) for im in images]
    assert df["bpp"].iloc[0] == pytest.approx(np.mean([8 * len(s) / 64 for s in streams]))
    raw = ev.raw_rgb_point(images, labels, _brightness_classifier)
    assert raw == {"codec": "raw", "label": "raw RGB", "bpp": 24.0, "accuracy": 1.0, "n_images": 6}
    with pytest.raises(ValueError, match="has to decode"):
        ev.task_curve(pipe, images, labels, qualities=[1], progress=False, decode=False)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        ev.task_curve(pipe, images, labels[:5], qualities=[1], progress=False)


def test_decode_then_analyse_curves_share_one_decode_per_rate_point():
    images, labels = _bright()

    class Counting(BitPlaneCodec):
        encodes = 0

        def encode_batch(self, images, quality):
            Counting.encodes += 1
            return super().encode_batch(images, quality)

    def inverted(x):  # a second pixel model that gets every label wrong
        return -_brightness_classifier(x)

    codec = Counting()
    curves = ev.decode_then_analyse_curves(codec, {"bright": _brightness_classifier, "inverted": inverted}, images,
                                           labels, qualities=[1, 8], progress=False)
    assert Counting.encodes == 2  # one encode per rate point, whatever the number of models
    assert list(curves) == [f"{codec.label or codec.name} + bright", f"{codec.label or codec.name} + inverted"]
    one = ev.task_curve(ev.DecodeThenAnalyse(BitPlaneCodec(), _brightness_classifier), images, labels,
                        qualities=[1, 8], progress=False)
    first, second = curves.values()
    assert list(first.columns) == CLASSIFICATION_COLUMNS
    pd.testing.assert_frame_equal(first.drop(columns=["label"]), one.drop(columns=["label"]))
    assert second["accuracy"].tolist() == [0.0, 0.0] and second["bpp"].tolist() == first["bpp"].tolist()
    with pytest.raises(ValueError, match="no models"):
        ev.decode_then_analyse_curves(codec, {}, images, labels, progress=False)


def test_task_curve_wrong_labels_lower_accuracy():
    images, labels = _bright()
    pipe = ev.DecodeThenAnalyse(BitPlaneCodec(), _brightness_classifier)
    flipped = labels.copy()
    flipped[:3] = 1 - flipped[:3]
    df = ev.task_curve(pipe, images, flipped, qualities=[8], progress=False)
    assert df["accuracy"].iloc[0] == pytest.approx(0.5)


def test_decode_free_never_decodes_pixels():
    images, labels = _bright()
    df = ev.task_curve(ev.DecodeFree(NoPixelsCodec()), images, labels, qualities=[1, 2], progress=False,
                       decode=False)
    assert list(df.columns) == CLASSIFICATION_COLUMNS + ["classify_s", "decode_s"]
    assert df["accuracy"].tolist() == [1.0, 1.0]
    assert df["psnr"].isna().all() and df["decode_s"].isna().all() and df["classify_s"].notna().all()
    assert df["bpp_payload"].tolist() == pytest.approx([3.0, 6.0])
    with pytest.raises(AssertionError, match="pixel decoder ran"):  # decode=True decodes for PSNR, after analysis
        ev.task_curve(ev.DecodeFree(NoPixelsCodec()), images, labels, qualities=[1], progress=False)


def test_decode_free_with_decoding_matches_decode_then_classify():
    images, labels = _bright()
    free = ev.task_curve(ev.DecodeFree(AnalysingBitPlaneCodec()), images, labels, qualities=[1, 4], progress=False)
    pix = ev.task_curve(ev.DecodeThenAnalyse(BitPlaneCodec(), _brightness_classifier), images, labels,
                        qualities=[1, 4], progress=False)
    assert free["decode_s"].notna().all()
    pd.testing.assert_frame_equal(free[CLASSIFICATION_COLUMNS].drop(columns=["codec", "label"]),
                                  pix[CLASSIFICATION_COLUMNS].drop(columns=["codec", "label"]))
    preds = ev.DecodeFree(NoPixelsCodec()).analyse([NoPixelsCodec().encode(images[0], 2)], "classification")
    assert preds.shape == (1, 2) and int(preds.argmax()) == labels[0]


def test_task_curve_keeps_streams_and_predictions_on_request():
    images, labels = _bright()
    codec = AnalysingBitPlaneCodec()
    plain = ev.task_curve(ev.DecodeFree(codec), images, labels, qualities=[1, 4], progress=False)
    kept = ev.task_curve(ev.DecodeFree(codec), images, labels, qualities=[1, 4], progress=False,
                         keep_outputs=True)
    streams, preds = kept.pop("streams"), kept.pop("predictions")
    pd.testing.assert_frame_equal(kept.drop(columns=["classify_s", "decode_s"]),
                                  plain.drop(columns=["classify_s", "decode_s"]))
    for q, s, p in zip([1, 4], streams, preds):
        assert s == codec.encode_batch(list(images), q)
        assert torch.equal(torch.as_tensor(p), torch.as_tensor(codec.analyse(s, "classification")))


def test_codec_without_analysis_is_refused():
    msg = "codec 'bitplane' cannot analyse its stream without decoding pixels: it has no analysis head"
    with pytest.raises(AnalysisNotSupported, match=msg):
        ev.DecodeFree(BitPlaneCodec())
    with pytest.raises(ValueError, match=msg):  # a ValueError, as the CLI reports user errors
        BitPlaneCodec().analyse([b""], "classification")
    with pytest.raises(AnalysisNotSupported, match="cannot analyse 'detection' from its stream"):
        ev.DecodeFree(NoPixelsCodec()).analyse([NoPixelsCodec().encode(_images(1)[0], 1)], "detection")


def test_task_curve_other_task_names_its_metric():
    images, _ = _bright(4, 8)
    semantic = torch.from_numpy((images[..., 0] >= 128).astype(np.int64))  # channel 0 bright -> class 1

    def parser(x):  # (B, 2, H, W) logits from the red channel
        r = (x[:, 0] >= 128 / 255).float()
        return {"out": torch.stack([1 - r, r], dim=1)}

    df = ev.task_curve(ev.DecodeThenAnalyse(BitPlaneCodec(), parser), images, semantic,
                       ev.get_task("parsing", num_classes=2), qualities=[1, 8], progress=False)
    assert list(df.columns) == ["codec", "label", "quality", "bpp", "bpp_payload", "miou", "pixel_accuracy",
                                "psnr", "n_images"]
    assert df["miou"].tolist() == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------- tasks


def test_task_registry():
    assert ev.list_tasks() == ["attributes", "classification", "detection", "instance_segmentation", "parsing"]
    metrics = {n: ev.get_task(n).metric for n in ev.list_tasks()}
    assert metrics == {"attributes": "mean_accuracy", "classification": "accuracy", "detection": "map",
                       "instance_segmentation": "map", "parsing": "miou"}
    task = ev.Classification()
    assert ev.get_task(task) is task
    with pytest.raises(ValueError, match="unknown task 'segm'.*detection"):
        ev.get_task("segm")


def test_classification_predict_restores_mode_and_describes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 7), torch.nn.Dropout(0.5)).train()
    images = np.stack(_images(5, 4))
    task = ev.get_task("classification")
    logits = task.predict(model, images, batch_size=2)
    assert logits.shape == (5, 7) and model.training  # train mode given back
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(logits, ref)  # eval mode (no dropout) inside predict
    assert task.score(logits, ref.argmax(1)) == {"accuracy": 1.0}
    d = task.describe(logits[0])
    assert d["class"] == int(ref[0].argmax()) == d["top5"][0]["class"]
    probs = [p["probability"] for p in d["top5"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
    assert probs[0] == pytest.approx(float(torch.softmax(ref[0].double(), 0).max()))
    named = ev.Classification(classes=list("abcdefg")).describe(logits[0])
    assert named["name"] == "abcdefg"[d["class"]]


def _box_target():
    return {"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 5.0, 50.0, 40.0]]), "labels": torch.tensor([0, 1])}


def test_detection_score_and_predict():
    task = ev.get_task("detection")
    gt = _box_target()
    perfect = {**gt, "scores": torch.tensor([0.9, 0.8])}
    assert task.score([perfect], [gt]) == pytest.approx({"map": 1.0, "map_50": 1.0, "map_75": 1.0})
    half = {k: v[:1] for k, v in perfect.items()}  # class 1 missed: its AP is 0
    assert task.score([half], [gt])["map"] == pytest.approx(0.5)
    assert task.score([perfect], [gt])["map"] == pytest.approx(ev.mean_ap([perfect], [gt])["map"])

    class Detector(torch.nn.Module):  # torchvision convention: a list of (3, H, W) images in, dicts out
        def forward(self, images):
            assert isinstance(images, list) and images[0].shape == (3, 64, 64)
            return [{"boxes": gt["boxes"], "scores": torch.tensor([0.3, 0.7]), "labels": gt["labels"]}
                    for _ in images]

    preds = task.predict(Detector(), np.zeros((3, 64, 64, 3), np.uint8), batch_size=2)
    assert len(preds) == 3 and task.score(preds, [gt] * 3)["map"] == pytest.approx(1.0)
    d = task.describe(preds[0])["detections"]
    assert [x["label"] for x in d] == [1, 0] and d[0]["score"] == pytest.approx(0.7)
    assert d[0]["box"] == [30.0, 5.0, 50.0, 40.0]


def test_instance_segmentation_shifted_mask():
    task = ev.get_task("instance_segmentation")
    gt = torch.zeros(1, 20, 20, dtype=torch.bool)
    gt[0, 5:15, 5:15] = True
    shifted = torch.zeros(1, 20, 20, dtype=torch.bool)
    shifted[0, 5:15, 7:17] = True  # IoU = 80 / 120 = 2/3
    target = {"masks": gt, "labels": torch.tensor([0])}
    pred = {"masks": shifted, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    # matched at the IoU thresholds .50, .55, .60, .65 of the ten .50:.05:.95
    assert task.score([pred], [target]) == pytest.approx({"map": 0.4, "map_50": 1.0, "map_75": 0.0})
    assert task.score([{**pred, "masks": gt}], [target])["map"] == pytest.approx(1.0)
    # Mask R-CNN output: (K, 1, H, W) probabilities, binarised at 0.5
    raw = task.postprocess([{"masks": shifted[:, None].float() * 0.8, "scores": [0.9], "labels": [0],
                             "boxes": [[7.0, 5.0, 17.0, 15.0]]}])
    assert raw[0]["masks"].dtype == torch.bool and torch.equal(raw[0]["masks"], shifted)
    assert task.describe(raw[0])["detections"] == [{"label": 0, "score": pytest.approx(0.9), "mask_area": 100,
                                                    "box": [7.0, 5.0, 17.0, 15.0]}]


def test_parsing_miou():
    task = ev.get_task("parsing", num_classes=3)
    target = torch.zeros(1, 20, 20, dtype=torch.long)
    target[0, 5:15, 5:15] = 1
    pred = torch.zeros_like(target)
    pred[0, 5:15, 7:17] = 1
    # class 1: 80 / 120; class 0: 280 / 320; class 2 absent from both: left out of the mean
    res = task.score(pred, target)
    assert res["miou"] == pytest.approx((80 / 120 + 280 / 320) / 2, abs=1e-6)
    assert res["pixel_accuracy"] == pytest.approx(360 / 400)
    ignored = target.clone()
    ignored[0, :, 15:] = 255  # the columns where the prediction spills over are not scored
    # class 1: 80 / 100; class 0: 200 / 220 (300 scored pixels, 100 of them class 1 in the target)
    assert task.score(pred, ignored)["miou"] == pytest.approx((80 / 100 + 200 / 220) / 2, abs=1e-6)
    d = task.describe(pred[0])
    assert d["classes"] == [{"class": 0, "fraction": 0.75}, {"class": 1, "fraction": 0.25}]
    with pytest.raises(ValueError, match="num_classes"):
        ev.get_task("parsing").score(pred, target)


def test_attributes_mean_accuracy():
    task = ev.get_task("attributes", names=["smiling", "glasses"])
    target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = torch.tensor([[3.0, -2.0], [-1.0, -1.0], [2.0, 1.0], [-4.0, 5.0]])  # attribute 1: 2 of 4 right
    assert task.score(logits, target) == pytest.approx({"mean_accuracy": (1.0 + 0.5) / 2})
    d = task.describe(logits[0])["attributes"]
    assert [(a["name"], a["present"]) for a in d] == [("smiling", True), ("glasses", False)]
    assert d[0]["probability"] == pytest.approx(1 / (1 + math.exp(-3)))


def test_json_roundtrip(tmp_path, monkeypatch):
    df = pd.DataFrame({"bpp": [0.1, 0.2], "psnr": [30.0, float("inf")], "ms_ssim": [np.nan, 0.9]})
    path = ev.save_json({"curve": df, "n": np.int64(3)}, tmp_path / "a" / "b.json")
    back = ev.load_json(path)
    assert back["n"] == 3 and back["curve"][1]["psnr"] is None and back["curve"][0]["bpp"] == 0.1
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    assert ev.results_dir("laptop") == tmp_path / "laptop"


def test_time_call():
    import time

    calls = []

    def nap(seconds):
        calls.append(seconds)
        time.sleep(seconds)

    assert ev.time_call(nap, 0.01, repeat=3, warmup=1) >= 0.01
    assert len(calls) == 4  # one warm-up and three timed runs


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
    # the bound (0.003 bpp) lies far left of the data: annotated at the axis edge, not a line widening the axis
    assert any(plots.BOUND_LABEL in t.get_text() for t in figs[1].axes[0].texts)
    assert figs[1].axes[0].get_xlim()[0] > ev.info_bound_bpp(10, 32, 32)
    for f in figs:
        plt.close(f)
