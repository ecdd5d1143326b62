"""Paper B (cdlib.papers.zhang2023): FaceWorld procedural faces, the CelebAMask-HQ loader, calibration tables."""
import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cdlib.data import build_dataset, content_hash, list_datasets
from cdlib.papers.zhang2023 import celebamask as cm
from cdlib.papers.zhang2023 import faceworld as fw
from cdlib.papers.zhang2023 import (
    ATTRIBUTE_KIND, ATTRIBUTES, CELEBAMASK_LABELS, CELEBAMASK_LAYOUT, FULL_TO_MERGED, MERGED_LABELS, CelebAMaskHQ,
    FaceWorld, dataset_statistics, face_statistics,
)

A = {a: i for i, a in enumerate(ATTRIBUTES)}
L = {n: i for i, n in enumerate(CELEBAMASK_LABELS)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def faces():
    """One chunk of 64 px faces, full labels."""
    return FaceWorld("train", n=256, image_size=64, seed=0, cache=False)


# ------------------------------------------------------------------------------------------------ FaceWorld
def test_labels_attributes_and_merge_table():
    assert CELEBAMASK_LABELS == ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                                 "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
    assert len(ATTRIBUTES) >= 16 and set(ATTRIBUTE_KIND) == set(ATTRIBUTES)
    for name in ("Male", "Young", "Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Wearing_Hat", "Bangs", "Black_Hair",
                 "Blond_Hair", "Brown_Hair", "Gray_Hair", "Wavy_Hair", "Mustache", "No_Beard", "Wearing_Lipstick",
                 "Pale_Skin", "Narrow_Eyes", "Bushy_Eyebrows", "Big_Nose"):
        assert name in ATTRIBUTES
    assert {ATTRIBUTE_KIND[a] for a in ("Smiling", "Mouth_Slightly_Open", "Narrow_Eyes")} == {"geometry"}
    assert {ATTRIBUTE_KIND[a] for a in ("Black_Hair", "Wearing_Lipstick", "Pale_Skin")} == {"appearance"}
    expected = {"l_eye": "eyes", "r_eye": "eyes", "l_brow": "brows", "r_brow": "brows", "l_ear": "ears",
                "r_ear": "ears", "ear_r": "ears", "u_lip": "mouth", "l_lip": "mouth", "neck_l": "neck"}
    for i, name in enumerate(CELEBAMASK_LABELS):
        assert MERGED_LABELS[FULL_TO_MERGED[i]] == expected.get(name, name)
    assert sorted(set(FULL_TO_MERGED.tolist())) == list(range(len(MERGED_LABELS)))


def test_deterministic_prefix_and_pure_function_of_index():
    a = FaceWorld("test", n=270, seed=3, cache=False)
    b = FaceWorld("test", n=270, seed=3, cache=False)
    assert content_hash(a.images) == content_hash(b.images) and content_hash(a.parsing) == content_hash(b.parsing)
    c = FaceWorld("test", n=260, seed=3, cache=False)   # item i does not depend on n (chunk boundary at 256)
    assert np.array_equal(a.images[:260], c.images) and np.array_equal(a.attributes[:260], c.attributes)
    assert np.array_equal(a.landmarks[:260], c.landmarks) and np.array_equal(a.parsing[:260], c.parsing)
    assert not np.array_equal(FaceWorld("test", n=8, seed=4, cache=False).images, a.images[:8])
    assert not np.array_equal(FaceWorld("val", n=8, seed=3, cache=False).images, a.images[:8])


def test_same_faces_at_every_size(faces):
    big = FaceWorld("train", n=16, image_size=128, seed=0, cache=False)
    assert np.array_equal(big.attributes, faces.attributes[:16])
    assert np.array_equal(big.landmarks, faces.landmarks[:16])
    # 2x2 blocks of the 128 px map against the 64 px map: the same layout up to edge pixels
    agree = (big.parsing[:, ::2, ::2] == faces.parsing[:16]).mean()
    assert agree > 0.85


def test_items_shapes_dtypes_and_ranges(faces):
    it = faces[5]
    assert set(it) == {"image", "parsing", "attributes", "landmarks"}
    assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.float32
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    assert it["parsing"].shape == (64, 64) and it["parsing"].dtype == torch.int64
    assert it["attributes"].shape == (len(ATTRIBUTES),) and it["attributes"].dtype == torch.float32
    assert set(it["attributes"].unique().tolist()) <= {0.0, 1.0}
    assert it["landmarks"].shape == (5, 2) and it["landmarks"].dtype == torch.float32
    assert faces.parsing.max() < 19
    assert set(np.unique(faces.parsing).tolist()) == set(range(19))      # every CelebAMask-HQ label is drawn
    merged = FaceWorld("train", n=8, seed=0, labels="merged", cache=False)
    assert merged.num_classes == 12
    for i in range(8):
        assert torch.equal(merged[i]["parsing"], torch.from_numpy(FULL_TO_MERGED[faces.parsing[i]]))
    assert int(merged[0]["parsing"].max()) < 12


def test_attribute_model_correlations():
    p = fw.sample_face_params(np.random.default_rng(0), 20000)["attributes"].astype(bool)
    male, young = p[:, A["Male"]], p[:, A["Young"]]
    P = lambda a, given=slice(None): p[given, A[a]].mean()  # noqa: E731
    assert 0.37 < P("Male") < 0.47 and 0.7 < P("Young") < 0.84
    assert P("Young", ~male) > P("Young", male) + 0.15
    for a in ("Mustache", "Goatee", "Bald"):
        assert P(a, ~male) == 0, a
    for a in ("Wearing_Lipstick", "Heavy_Makeup"):
        assert P(a, male) == 0, a
    assert P("No_Beard", ~male) == 1 and P("No_Beard", male) < 0.75
    assert P("Mustache", male) > 0.08 and P("Bushy_Eyebrows", male) > 2 * P("Bushy_Eyebrows", ~male)
    assert P("Wearing_Lipstick", ~male) > 0.6 and P("Wearing_Earrings", ~male) > 5 * P("Wearing_Earrings", male)
    assert P("Blond_Hair", ~male) > 2 * P("Blond_Hair", male)
    assert P("Gray_Hair", ~young) > 5 * P("Gray_Hair", young) and P("Bald", ~young) > 5 * P("Bald", young)
    assert P("Mouth_Slightly_Open", p[:, A["Smiling"]]) > P("Mouth_Slightly_Open", ~p[:, A["Smiling"]]) + 0.3
    hair = p[:, [A["Black_Hair"], A["Brown_Hair"], A["Blond_Hair"], A["Gray_Hair"]]].sum(1)
    assert hair.max() == 1                                               # hair colours exclusive
    assert not (p[:, A["Wavy_Hair"]] & p[:, A["Straight_Hair"]]).any()
    assert not (p[:, A["Heavy_Makeup"]] & ~p[:, A["Wearing_Lipstick"]]).any()
    assert not (p[:, A["Bald"]] & p[:, A["Bangs"]]).any()
    assert not (p[:, A["Goatee"]] & p[:, A["No_Beard"]]).any()


def test_landmarks_inside_the_face(faces):
    lm = faces.landmarks
    assert np.isfinite(lm).all() and (lm > 0).all() and (lm < 1).all()
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()     # left is image-left
    assert (lm[:, 2, 1] > lm[:, :2, 1].mean(1)).all() and (lm[:, 3:, 1].mean(1) > lm[:, 2, 1]).all()
    S = faces.image_size
    ij = np.clip((lm * S).astype(int), 0, S - 1)
    lab = faces.parsing[np.arange(len(lm))[:, None], ij[..., 1], ij[..., 0]]          # (N, 5)
    assert np.isin(lab, range(1, 13)).mean() > 0.97                                   # on face parts
    eyes = np.isin(lab[:, :2], (L["l_eye"], L["r_eye"], L["eye_g"]))
    assert eyes.mean() > 0.9
    assert (lab[:, 2] == L["nose"]).mean() > 0.9


def test_parts_follow_attributes_and_occlusions(faces):
    par, att = faces.parsing, faces.attributes.astype(bool)
    has = lambda name: (par == L[name]).any(axis=(1, 2))  # noqa: E731
    count = lambda *names: np.isin(par, [L[n] for n in names]).sum(axis=(1, 2))  # noqa: E731
    assert np.array_equal(has("eye_g"), att[:, A["Eyeglasses"]])
    assert not (has("hat") & ~att[:, A["Wearing_Hat"]]).any() and has("hat")[att[:, A["Wearing_Hat"]]].mean() > 0.9
    assert not (has("ear_r") & ~att[:, A["Wearing_Earrings"]]).any()
    assert not (has("neck_l") & ~att[:, A["Wearing_Necklace"]]).any()
    assert not (has("mouth") & ~att[:, A["Mouth_Slightly_Open"]]).any()
    bangs = att[:, A["Bangs"]]
    assert count("l_brow", "r_brow")[bangs].mean() < 0.6 * count("l_brow", "r_brow")[~bangs].mean()  # bangs over brows
    cover = fw.FaceWorld("train", n=1, cache=False).chunk_params(0)["cover_ears"]
    assert count("l_ear", "r_ear")[cover].mean() < 0.5 * count("l_ear", "r_ear")[~cover].mean()    # hair over ears
    params = faces.chunk_params(0)
    sun = params["sunglasses"]
    assert sun.any() and count("l_eye", "r_eye")[sun].max() == 0                     # dark glasses hide the eyes
    hat = att[:, A["Wearing_Hat"]]
    assert count("hair")[hat].mean() < count("hair")[~hat].mean()


def test_geometry_and_appearance_attributes(faces):
    """Appearance attributes leave the parsing map unchanged; geometric ones change it."""
    params = faces.chunk_params(0)
    params = {k: v[:32] for k, v in params.items()}
    draw = lambda p: fw.render_faces(p, 64, np.random.default_rng(7))  # noqa: E731
    base = draw(params)
    for name in ("Wearing_Lipstick", "Pale_Skin", "Blond_Hair"):
        other = draw(fw.set_attribute(params, name, True))
        assert np.array_equal(other["parsing"], base["parsing"]), name
        assert not np.array_equal(other["images"], base["images"]), name
    for name in ("Smiling", "Mouth_Slightly_Open"):
        on, off = draw(fw.set_attribute(params, name, True)), draw(fw.set_attribute(params, name, False))
        changed = (on["parsing"] != off["parsing"]).any(axis=(1, 2))
        assert changed.mean() > 0.9, name


def test_flip_augmentation_swaps_sides():
    ds = FaceWorld("train", n=16, cache=False, augment=True, aug_seed=1)
    flipped = [i for i in range(16) if ds._flipped(i)]
    assert flipped and len(flipped) < 16
    i = flipped[0]
    it = ds[i]
    assert torch.equal(it["image"], torch.from_numpy(ds.images[i][:, ::-1].copy()).permute(2, 0, 1).float() / 255)
    par = ds.parsing[i][:, ::-1]
    assert torch.equal(it["parsing"], torch.from_numpy(fw.FLIP_LABELS[par]))
    assert (it["parsing"] == L["l_eye"]).sum() == (par == L["r_eye"]).sum()
    lm = it["landmarks"].numpy()
    assert np.allclose(lm[0], [1 - ds.landmarks[i][1, 0], ds.landmarks[i][1, 1]])
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    ds.set_epoch(1)
    assert [j for j in range(16) if ds._flipped(j)] != flipped


def test_cache_roundtrip_and_bad_arguments(tmp_path):
    a = FaceWorld("val", n=20, seed=1)
    assert any((tmp_path / "cache" / "faceworld").iterdir())
    b = FaceWorld("val", n=20, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.landmarks, b.landmarks)
    for kw, msg in (({"split": "dev"}, "split"), ({"n": 0}, "n must"), ({"image_size": 16}, "image_size"),
                    ({"labels": "coarse"}, "labels")):
        with pytest.raises(ValueError, match=msg):
            FaceWorld(**{"n": 4, "cache": False, **kw})


def test_statistics(faces):
    st = face_statistics(faces.parsing, faces.attributes)
    assert abs(st["pixels"]["pixel_share"].sum() - 1) < 1e-9 and st["pixels"].loc["background", "image_share"] == 1
    assert np.allclose(st["rates"].values, faces.attributes.mean(0))
    cond = st["conditional"]
    assert cond.loc["Mustache", "P(a|not Male)"] == 0 and cond.loc["Wearing_Lipstick", "P(a|Male)"] == 0
    assert cond.loc["Gray_Hair", "P(a|not Young)"] > cond.loc["Gray_Hair", "P(a|Young)"]
    assert st["correlation"].loc["Male", "No_Beard"] < 0 and st["correlation"].loc["Male", "Wearing_Lipstick"] < 0
    again = dataset_statistics(faces, max_items=64)
    assert np.allclose(again["rates"].values, faces.attributes[:64].mean(0))


def test_registry_builders(tmp_path):
    assert {"faceworld", "celebamask_hq"} <= set(list_datasets())
    cfg = SimpleNamespace(dataset="faceworld", num_train=12, image_size=64, seed=2, model_options={}, data_path="")
    ds = build_dataset(cfg, "train")
    assert isinstance(ds, FaceWorld) and len(ds) == 12 and ds.labels == "merged" and ds.augment
    cfg.model_options = {"face_labels": "full"}
    assert build_dataset(cfg, "train").labels == "full"
    cfg.dataset = "celebamask_hq"
    with pytest.raises(FileNotFoundError, match="CelebA-HQ-img"):
        build_dataset(cfg, "train")


# ------------------------------------------------------------------------------------------------ CelebAMask-HQ
CELEBA_40 = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
             "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
             "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
             "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
             "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def _ellipse(size, cx, cy, rx, ry):
    yy, xx = np.mgrid[:size, :size] + 0.5
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _fake_celebamask(root: Path, n: int = 12) -> np.ndarray:
    """A tiny tree in the real layout: 96 px images, 48 px masks; face 3 has no eyes; returns the attributes."""
    (root / cm.IMG_DIR).mkdir(parents=True)
    rng = np.random.default_rng(0)
    att = rng.integers(0, 2, (n, 40))
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / cm.IMG_DIR / f"{k}.jpg")
        d = root / cm.MASK_DIR / str(k // 2000)
        d.mkdir(parents=True, exist_ok=True)
        parts = {"skin": _ellipse(48, 24, 26, 14, 18), "hair": _ellipse(48, 24, 10, 16, 9),
                 "nose": _ellipse(48, 24, 27, 3, 5), "u_lip": _ellipse(48, 24, 35, 6, 1.5),
                 "l_lip": _ellipse(48, 24, 37, 6, 1.5)}
        if k != 3:
            parts.update({"l_eye": _ellipse(48, 18, 22, 3, 1.5), "r_eye": _ellipse(48, 30, 22, 3, 1.5)})
        for part, m in parts.items():
            Image.fromarray((m * 255).astype(np.uint8)).save(d / f"{k:05d}_{part}.png")
    lines = [str(n), " ".join(CELEBA_40)] + [f"{k}.jpg  " + " ".join("1" if v else "-1" for v in att[k])
                                            for k in range(n)]
    (root / cm.ATTR_FILE).write_text("\n".join(lines) + "\n")
    return att


def test_celebamask_fake_tree(tmp_path):
    att = _fake_celebamask(tmp_path)
    full = CelebAMaskHQ(tmp_path, split="all", image_size=48)
    assert len(full) == 12 and full.attribute_names == ATTRIBUTES
    assert [len(CelebAMaskHQ(tmp_path, split=s, image_size=48)) for s in ("train", "val", "test")] == [10, 1, 1]
    it = full[0]
    assert set(it) == {"image", "parsing", "attributes", "landmarks"}
    assert it["image"].shape == (3, 48, 48) and it["image"].dtype == torch.float32
    assert it["parsing"].shape == (48, 48) and it["parsing"].dtype == torch.int64
    par = it["parsing"].numpy()
    assert par[10, 24] == L["hair"] and par[26, 24] == L["nose"] and par[22, 18] == L["l_eye"] and par[0, 0] == 0
    assert par[30, 15] == L["skin"]                                       # hair painted over skin, as g_mask.py does
    cols = [CELEBA_40.index(a) for a in ATTRIBUTES]
    assert np.array_equal(it["attributes"].numpy(), att[0, cols].astype(np.float32))
    lm = it["landmarks"].numpy()
    assert np.isfinite(lm).all() and np.allclose(lm[0], [18.5 / 48, 22 / 48], atol=0.03)
    assert lm[3, 0] < lm[2, 0] < lm[4, 0]
    no_eyes = full[3]["landmarks"].numpy()
    assert np.isnan(no_eyes[:2]).all() and np.isfinite(no_eyes[2:]).all()
    assert torch.isnan(CelebAMaskHQ(tmp_path, split="all", image_size=48, landmarks="none")[0]["landmarks"]).all()
    merged = CelebAMaskHQ(tmp_path, split="all", image_size=48, labels="merged")[0]["parsing"]
    assert torch.equal(merged, torch.from_numpy(FULL_TO_MERGED[par]))
    assert CelebAMaskHQ(tmp_path, split="all", image_size=48, attributes="all")[0]["attributes"].shape == (40,)
    with pytest.raises(ValueError, match="unknown CelebA attributes"):
        CelebAMaskHQ(tmp_path, attributes=("Male", "Has_Tail"))
    st = dataset_statistics(full)
    assert st["pixels"].loc["hair", "image_share"] == 1 and st["pixels"].loc["hat", "pixel_share"] == 0
    # CelebA's split through the mapping files
    (tmp_path / cm.MAPPING_FILE).write_text("idx orig_idx orig_file\n" + "".join(
        f"{k} {100 + k} {101 + k:06d}.jpg\n" for k in range(12)))
    (tmp_path / cm.PARTITION_FILE).write_text("".join(f"{101 + k:06d}.jpg {0 if k < 6 else 1 if k < 9 else 2}\n"
                                                      for k in range(12)))
    assert [len(CelebAMaskHQ(tmp_path, split=s)) for s in ("train", "val", "test")] == [6, 3, 3]
    cfg = SimpleNamespace(dataset="celebamask_hq", data_path=str(tmp_path), image_size=64, model_options={}, seed=0,
                          num_train=1)
    ds = build_dataset(cfg, "val")
    assert isinstance(ds, CelebAMaskHQ) and ds.labels == "merged" and ds[0]["image"].shape == (3, 64, 64)


def test_celebamask_missing_or_wrong_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        CelebAMaskHQ(tmp_path / "nowhere")
    assert CELEBAMASK_LAYOUT in str(e.value) and "CelebAMask-HQ-mask-anno/<k>/<id:05d>_<part>.png" in str(e.value)
    _fake_celebamask(tmp_path)
    (tmp_path / cm.ATTR_FILE).rename(tmp_path / "attrs.txt")
    with pytest.raises(FileNotFoundError, match="CelebAMask-HQ-attribute-anno.txt is missing"):
        CelebAMaskHQ(tmp_path)
    (tmp_path / cm.ATTR_FILE).write_text("12\nMale Young\n0.jpg 1\n")
    with pytest.raises(ValueError, match="not a CelebAMask-HQ attribute file"):
        CelebAMaskHQ(tmp_path)
    (tmp_path / "attrs.txt").rename(tmp_path / cm.ATTR_FILE)
    (tmp_path / cm.MASK_DIR).rename(tmp_path / "masks")
    with pytest.raises(FileNotFoundError, match="CelebAMask-HQ-mask-anno is missing"):
        CelebAMaskHQ(tmp_path)
    (tmp_path / "masks").rename(tmp_path / cm.MASK_DIR)
    ds = CelebAMaskHQ(tmp_path, split="all")
    (tmp_path / cm.IMG_DIR / "5.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="5.jpg is missing"):
        ds[5]
    with pytest.raises(FileNotFoundError, match="expected layout"):
        CelebAMaskHQ("")


# ------------------------------------------------------------------------------------------------ architecture
def test_paper_imports_only_the_core():
    pkg = Path(fw.__file__).resolve().parent
    for path in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 3:      # from ...x: the cdlib core
                assert not (node.module or "").startswith("papers"), path
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("cdlib.papers.") or node.module.startswith(
                    "cdlib.papers.zhang2023"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("cdlib.papers.") and not a.name.startswith("cdlib.papers.zhang2023")
                               for a in node.names), path
