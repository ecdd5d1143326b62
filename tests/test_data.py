"""cdlib.data: ShapesWorld, natural photos, user-dataset loaders, the dataset registry; cdlib.images, cdlib.paths."""
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib.config import make_config
from cdlib import images, paths
from cdlib.data import (
    FlatFolderDataset, ImageFolderDataset, NaturalPhotos, ShapesWorld, VOC_CLASSES, build_dataset, coco_detection,
    content_hash, list_datasets, load_image, register_dataset, unregister_dataset, voc_detection,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ ShapesWorld
def test_shapes_deterministic_and_prefix():
    a = ShapesWorld("test", n=300, seed=3, cache=False)
    b = ShapesWorld("test", n=300, seed=3, cache=False)
    assert content_hash(a.images) == content_hash(b.images)
    assert np.array_equal(a.labels, b.labels)
    c = ShapesWorld("test", n=40, seed=3, cache=False)
    assert np.array_equal(c.images, a.images[:40])
    d = ShapesWorld("test", n=300, seed=4, cache=False)
    assert content_hash(d.images) != content_hash(a.images)


def test_shapes_splits_disjoint():
    hashes = {}
    for split in ("train", "val", "test"):
        ds = ShapesWorld(split, n=256, cache=False)
        hashes[split] = {content_hash(im) for im in ds.images}
        assert len(hashes[split]) == 256
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_shapes_targets_consistent():
    ds = ShapesWorld("val", n=64, image_size=64, with_targets=True, max_objects=4, cache=False)
    assert ds.num_classes == len(ds.CLASSES) >= 10
    assert ds.images.shape == (64, 64, 64, 3) and ds.images.dtype == np.uint8
    counts = []
    for i in range(len(ds)):
        it = ds[i]
        assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.float32
        assert 0.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
        k = len(it["labels"])
        counts.append(k)
        assert it["boxes"].shape == (k, 4) and it["masks"].shape == (k, 64, 64)
        areas = it["masks"].flatten(1).sum(1)
        assert (areas > 0).all()
        # label = class of the largest visible object
        assert int(it["label"]) == int(it["labels"][areas.argmax()])
        # boxes are the tight bounds of the masks
        for (x0, y0, x1, y1), m in zip(it["boxes"].long().tolist(), it["masks"]):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert (x0, y0, x1, y1) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        # semantic mask = class + 1 under each instance, 0 elsewhere
        sem = torch.zeros(64, 64, dtype=torch.int64)
        for lab, m in zip(it["labels"], it["masks"]):
            sem[m.bool()] = lab + 1
        assert torch.equal(sem, it["semantic"])
    assert min(counts) >= 1 and max(counts) > 1
    assert len(np.unique(ds.labels)) >= 8


def test_shapes_sizes_and_flip_augmentation():
    for size in (128, 256):
        ds = ShapesWorld("test", n=4, image_size=size, cache=False)
        assert ds.images.shape == (4, size, size, 3)
    tr = ShapesWorld("train", n=32, with_targets=True, aug_seed=1, cache=False)
    flipped = [i for i in range(32) if tr._flipped(i)]
    assert 0 < len(flipped) < 32
    i = flipped[0]
    it = tr[i]
    assert torch.equal(it["image"], torch.from_numpy(tr.images[i][:, ::-1].copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(it["semantic"], tr.targets(i)["semantic"].flip(1))
    tr.set_epoch(1)
    assert [tr._flipped(j) for j in range(32)] != [j in flipped for j in range(32)]


@pytest.mark.slow  # ~7 s on one thread: generates 2,000 scenes twice (and times it)
def test_shapes_cache_roundtrip_and_speed(tmp_path):
    t = time.perf_counter()
    a = ShapesWorld("train", n=2000, image_size=64)
    elapsed = time.perf_counter() - t
    # 10,000 images in under 30 s means ~6 s for 2,000 (generous: one thread, shared machine).
    assert elapsed < 30, f"2000 images took {elapsed:.1f}s"
    files = list((tmp_path / "cache" / "shapesworld").glob("*.npz"))
    assert len(files) == 1
    b = ShapesWorld("train", n=2000, image_size=64)
    assert np.array_equal(a.images, b.images)
    files[0].write_bytes(b"damaged")
    c = ShapesWorld("train", n=2000, image_size=64)
    assert np.array_equal(a.images, c.images)


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ShapesWorld("training", n=4)
    with pytest.raises(ValueError, match="image_size"):
        ShapesWorld("test", n=4, image_size=8)
    with pytest.raises(ValueError, match="max_objects"):
        ShapesWorld("test", n=4, max_objects=0)


# ------------------------------------------------------------------------------------------------ photos
def test_natural_photos_split_and_crops():
    test = NaturalPhotos.test_images()
    train = NaturalPhotos.train_images()
    assert len(test) >= 3 and len(train) >= 5
    test_h = {content_hash(im) for im in test}
    assert not test_h & {content_hash(im) for im in train}
    small = NaturalPhotos.test_images(max_side=128)
    assert all(max(im.shape[:2]) <= 128 and im.dtype == np.uint8 and im.shape[2] == 3 for im in small)
    ds = NaturalPhotos("train", crop=48, seed=1, n_crops=10)
    a = ds[3]["image"]
    assert a.shape == (3, 48, 48)
    assert torch.equal(a, NaturalPhotos("train", crop=48, seed=1, n_crops=10)[3]["image"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[3]["image"])
    assert len(NaturalPhotos("test")) == len(test)
    with pytest.raises(ValueError, match="split"):
        NaturalPhotos("val")


def test_colour_training_photos_exclude_the_held_out_ones():
    from cdlib.data import COLOUR_PHOTOS_TRAIN
    from cdlib.data.photos import sample_photo

    test_h = {content_hash(im) for im in NaturalPhotos.test_images()}
    colour = [sample_photo(n) for n in COLOUR_PHOTOS_TRAIN]
    assert len(colour) >= 8 and not test_h & {content_hash(im) for im in colour}
    # colour photos: the channels differ (the grey scans of PHOTOS_TRAIN do not)
    assert all(np.abs(im[..., 0].astype(int) - im[..., 2]).mean() > 3 for im in colour)
    with pytest.raises(ValueError, match="held-out"):
        NaturalPhotos("train", photos=("chelsea", "astronaut"))
    with pytest.raises(ValueError, match="unknown photo source"):
        sample_photo("flickr:cat")


def test_dead_leaves_seeded_covering_and_scale_invariant():
    from cdlib.data.deadleaves import R_MAX, R_MIN, _power_law_radii, dead_leaves

    tex = [np.full((20, 20, 3), 200, np.uint8)]
    a = dead_leaves(np.random.default_rng(3), 96, tex, blur_prob=0.0)
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3)
    assert np.array_equal(a, dead_leaves(np.random.default_rng(3), 96, tex, blur_prob=0.0))
    assert not np.array_equal(a, dead_leaves(np.random.default_rng(4), 96, tex, blur_prob=0.0))
    # r^-3 radii: P(r > 2 rmin) = (1/4 - rmax^-2 rmin^2 ...) ~ 1/4 of the leaves are twice the smallest
    r = _power_law_radii(np.random.default_rng(0), 200_000, R_MIN, R_MAX)
    assert r.min() >= R_MIN and r.max() <= R_MAX
    assert abs((r > 2 * R_MIN).mean() - 0.25) < 0.01
    # no hole left unpainted (the canvas starts black): almost no pure-black pixels
    assert (a.max(axis=2) < 5).mean() < 0.01


def test_photo_mix_sources_determinism_and_weights():
    from cdlib.data import PhotoMix, ShapesWorld

    mix = PhotoMix(crop=128, seed=2, n_crops=64)
    assert len(mix) == 64 and mix[5]["image"].shape == (3, 128, 128)
    assert torch.equal(mix[5]["image"], PhotoMix(crop=128, seed=2, n_crops=64)[5]["image"])
    sources = [mix.source(i) for i in range(64)]
    assert set(sources) == set(PhotoMix.SOURCES)
    # a ShapesWorld item is a mosaic of whole training scenes
    i = sources.index("shapes")
    tile = mix.crop_array(i)[:64, :64]
    scenes = ShapesWorld("train", n=4000, image_size=64, seed=2).images
    assert any(np.array_equal(tile, sc) for sc in scenes)
    only = PhotoMix(crop=64, n_crops=32, weights=(1, 0, 0))
    assert {only.source(i) for i in range(32)} == {"photos"}
    with pytest.raises(ValueError, match="non-negative"):
        PhotoMix(weights=(1, -1, 0))


# ------------------------------------------------------------------------------------------------ user data
def _write(path, size=(40, 30), mode="RGB", color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode != "L" else 128).save(path)
    return path


def test_load_image_modes(tmp_path):
    img, note = load_image(_write(tmp_path / "a.png", (33, 17)), return_note=True)
    assert img.shape == (17, 33, 3) and img.dtype == np.uint8 and note == ""
    img, note = load_image(_write(tmp_path / "g.png", mode="L"), return_note=True)
    assert img.shape == (30, 40, 3) and "grey" in note
    img, note = load_image(_write(tmp_path / "t.png", mode="RGBA", color=(1, 2, 3, 4)), return_note=True)
    assert img.shape == (30, 40, 3) and "alpha" in note
    arr16 = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)
    Image.fromarray(arr16).save(tmp_path / "d.png")
    img, note = load_image(tmp_path / "d.png", return_note=True)
    assert img.shape == (30, 40, 3) and "16-bit" in note
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "bad.png")
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_image_folder(tmp_path):
    for split in ("train", "val"):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for k in range(3):
                _write(tmp_path / "inet" / split / c / f"{k}.jpg", (50, 40), color=colour)
    ds = ImageFolderDataset(tmp_path / "inet", split="train", image_size=32, seed=0)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    it = ds[4]
    assert it["image"].shape == (3, 32, 32) and int(it["label"]) == 1
    assert torch.equal(it["image"], ImageFolderDataset(tmp_path / "inet", split="train", image_size=32)[4]["image"])
    val = ImageFolderDataset(tmp_path / "inet", split="val", image_size=32)
    assert not val.train and val[0]["image"].shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="root/<class_name>"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="root/<class_name>"):
        ImageFolderDataset(tmp_path / "empty")


def test_flat_folder(tmp_path):
    for k, size in enumerate([(40, 30), (20, 20), (65, 33)]):
        _write(tmp_path / "kodak" / f"kodim{k:02d}.png", size)
    (tmp_path / "kodak" / "README.txt").write_text("not an image")
    ds = FlatFolderDataset(tmp_path / "kodak")
    assert len(ds) == 3 and ds.load(2).shape == (33, 65, 3)
    assert ds[0]["image"].shape == (3, 30, 40)
    crops = FlatFolderDataset(tmp_path / "kodak", crop=24, seed=2)
    assert all(crops[i]["image"].shape == (3, 24, 24) for i in range(3))
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="kodim01"):
        FlatFolderDataset(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="expected layout"):
        FlatFolderDataset(tmp_path / "missing")


def test_coco(tmp_path):
    root = tmp_path / "coco"
    _write(root / "val2017" / "000000000001.jpg", (64, 48))
    _write(root / "val2017" / "000000000002.jpg", (32, 32))
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "000000000002.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 5, 10, 20], "area": 200,
                         "iscrowd": 0, "segmentation": [[4, 5, 14, 5, 14, 25]]}],
        "categories": [{"id": 3, "name": "car"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    ds = coco_detection(root, "val2017")
    assert len(ds) == 2
    it = ds[0]
    assert it["image"].shape == (3, 48, 64)
    assert it["boxes"].tolist() == [[4.0, 5.0, 14.0, 25.0]] and it["labels"].tolist() == [3]
    assert ds[1]["boxes"].shape == (0, 4)
    with pytest.raises(FileNotFoundError, match="annotations/instances_<split>.json"):
        coco_detection(root, "train2017")


def test_voc(tmp_path):
    base = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    _write(base / "JPEGImages" / "2008_000001.jpg", (50, 40))
    (base / "Annotations").mkdir(parents=True)
    (base / "Annotations" / "2008_000001.xml").write_text(
        "<annotation><filename>2008_000001.jpg</filename><object><name>dog</name>"
        "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "val.txt").write_text("2008_000001\n")
    ds = voc_detection(tmp_path / "voc", "2012", "val")
    it = ds[0]
    assert it["image"].shape == (3, 40, 50)
    assert it["boxes"].tolist() == [[2.0, 3.0, 20.0, 30.0]]
    assert it["labels"].tolist() == [VOC_CLASSES.index("dog")]
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        voc_detection(tmp_path / "nothing")


def test_build_dataset(tmp_path):
    cfg = make_config("pixel_classifier", "laptop", num_train=64)
    tr = build_dataset(cfg, "train")
    assert isinstance(tr, ShapesWorld) and len(tr) == 64 and tr.augment
    te = build_dataset(cfg, "test")
    assert len(te) == 1000 and not te.augment
    cfg = make_config("hyperprior", "laptop")
    assert build_dataset(cfg, "train")[0]["image"].shape == (3, cfg.image_size, cfg.image_size)
    cfg = make_config("hyperprior", "laptop", dataset="flatfolder", data_path=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="expected layout"):
        build_dataset(cfg, "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "holdout")


# ------------------------------------------------------------------------------------------------ dataset registry
def _cfg(**kw):
    """The TrainConfig fields the dataset builders read, without going through make_config."""
    base = dict(dataset="shapes", num_train=16, image_size=32, seed=0, batch_size=4, data_path="")
    return SimpleNamespace(**{**base, **kw})


def test_registry_lists_builtin_datasets_and_rejects_unknown():
    assert list_datasets()[:2] == ("shapes", "photos")
    assert {"photomix", "colourphotos", "imagefolder", "flatfolder"} <= set(list_datasets())
    with pytest.raises(ValueError, match=re.escape("unknown dataset 'nope'; expected shapes | photos | photomix")):
        build_dataset(_cfg(dataset="nope"), "train")
    with pytest.raises(ValueError, match="split"):  # the split is checked before the name
        build_dataset(_cfg(dataset="nope"), "holdout")


def test_registry_toy_dataset_register_build_unregister():
    calls = []

    class Toy(torch.utils.data.Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return {"image": torch.full((3, 4, 4), i / 10), "label": torch.tensor(i % 2)}

    @register_dataset("toy_for_test")
    def build(cfg, split):
        calls.append((cfg.dataset, split))
        return Toy(cfg.num_train if split == "train" else 3)

    try:
        assert "toy_for_test" in list_datasets()
        ds = build_dataset(_cfg(dataset="toy_for_test", num_train=7), "train")
        assert isinstance(ds, Toy) and len(ds) == 7
        assert len(build_dataset(_cfg(dataset="toy_for_test"), "val")) == 3
        assert calls == [("toy_for_test", "train"), ("toy_for_test", "val")]
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("toy_for_test")(lambda cfg, split: None)
        with pytest.raises(ValueError, match="split"):
            build_dataset(_cfg(dataset="toy_for_test"), "holdout")
        assert len(calls) == 2
    finally:
        assert unregister_dataset("toy_for_test") is build
    assert "toy_for_test" not in list_datasets()
    with pytest.raises(ValueError, match="unknown dataset 'toy_for_test'; expected shapes"):
        build_dataset(_cfg(dataset="toy_for_test"), "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        unregister_dataset("toy_for_test")


def test_registry_builtin_builders(tmp_path):
    tr = build_dataset(_cfg(dataset="photos", image_size=40, batch_size=20, seed=5), "train")
    assert isinstance(tr, NaturalPhotos) and (tr.split, tr.crop, tr.seed, len(tr)) == ("train", 40, 5, 1280)
    assert len(build_dataset(_cfg(dataset="photos"), "train")) == 1024
    assert build_dataset(_cfg(dataset="photos"), "val").split == "test"
    for k in range(2):
        _write(tmp_path / "flat" / f"{k}.png", (20, 30))
        _write(tmp_path / "flat" / "train" / f"{k}.png", (40, 50))
        _write(tmp_path / "inet" / "val" / "cat" / f"{k}.png", (40, 50))
    flat = _cfg(dataset="flatfolder", data_path=str(tmp_path / "flat"), image_size=16, seed=2)
    ftr, fte = build_dataset(flat, "train"), build_dataset(flat, "test")
    assert ftr.root == tmp_path / "flat" / "train" and ftr.crop == 16 and ftr.seed == 2
    assert fte.root == tmp_path / "flat" and fte.crop is None and fte[0]["image"].shape == (3, 30, 20)
    ifd = build_dataset(_cfg(dataset="imagefolder", data_path=str(tmp_path / "inet"), image_size=24), "val")
    assert isinstance(ifd, ImageFolderDataset) and ifd.root == tmp_path / "inet" / "val" and not ifd.train
    assert ifd[1]["image"].shape == (3, 24, 24)


# ------------------------------------------------------------------------------------------------ images, paths
def test_data_reexports_images_and_paths():
    import cdlib.data as data

    assert data.load_image is images.load_image and data.fit_max_side is images.fit_max_side
    assert data.to_item_image is images.to_item_image and data.cache_dir is paths.cache_dir
    for name in data.__all__:
        assert hasattr(data, name), name


def test_image_conversions_roundtrip():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    x = images.to_tensor([a, a[::-1]])
    assert x.shape == (2, 3, 13, 21) and x.dtype == torch.float32
    assert np.array_equal(images.to_uint8(x)[1], a[::-1])
    assert torch.equal(images.to_item_image(a), x[0])
    assert np.array_equal(images.as_rgb_uint8(x[0]), a) and np.array_equal(images.as_rgb_uint8(x[:1]), a)
    with pytest.raises(ValueError, match="uint8"):
        images.as_rgb_uint8(a.astype(np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        images.as_rgb_uint8(a[..., 0])
    padded, ph, pw = images.pad_to(x, 16)
    assert padded.shape == (2, 3, 16, 32) and (ph, pw) == (3, 11)
    assert torch.equal(padded[..., :13, :21], x) and torch.equal(padded[..., -1, :21], x[..., -1, :])
    assert images.pad_to(x, 1)[0] is x
    small = images.fit_max_side(rng.integers(0, 256, (300, 170, 3), dtype=np.uint8), 60)
    assert small.shape == (60, 34, 3) and images.fit_max_side(a, 100) is a and images.fit_max_side(a, None) is a


def test_paths(tmp_path, monkeypatch):
    assert paths.cache_dir("shapesworld") == tmp_path / "cache" / "shapesworld"  # the autouse fixture's $CDLIB_CACHE
    monkeypatch.delenv("CDLIB_CACHE")
    assert paths.cache_dir() == Path.home() / ".cache" / "cdlib"
    monkeypatch.delenv("CDLIB_RESULTS", raising=False)
    assert paths.results_dir("laptop") == Path("results") / "laptop"
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "res"))
    assert paths.results_dir("paper") == tmp_path / "res" / "paper"
    shapes = ShapesWorld("test", n=2, cache=False)
    assert shapes._cache_path().parent == Path.home() / ".cache" / "cdlib" / "shapesworld"
