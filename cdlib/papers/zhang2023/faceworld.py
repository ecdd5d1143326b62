"""FaceWorld: seeded procedural faces with CelebAMask-HQ parsing labels, CelebA attributes and 5 landmarks.

No face data can be downloaded here, so chapter 4 trains and measures on drawn faces.  A face is a set of
parametric parts (head, ears, eyes with irises and lashes, brows, nose with nostrils, lips, mouth and teeth,
hair, beard, glasses, hat, earrings, necklace, neck, clothes) placed in a face frame that is rolled, scaled
and shifted; the parts are painted back to front into a *material* map, which gives both the colour (a
per-face palette, skin and hair textures, make-up, wrinkles) and the parsing map (each material has one
CelebAMask-HQ label).  Then: shading from a random light on an ellipsoidal head, a crop of a scikit-image
photo as background (the training photos only; the "camera" photo puts a real person behind some faces, a
distractor labelled background), a small lens blur and sensor noise.

What makes it not trivial (issue #11): bangs cover the brows, sunglasses cover the eyes, long hair covers the
ears, a hat covers the hair; head roll, scale and shift; random light; stochastic skin grain and hair strands
(wavy or straight); photo backgrounds; read and shot noise.  Fine attributes are thresholds of continuous
latents (eye opening, brow thickness, nose size, lip thickness), so faces near a threshold are hard at 64 px,
and some are hidden by occlusions (brows under bangs, eyes under sunglasses).

Attributes (:data:`ATTRIBUTES`, CelebA's names, in CelebA's order) are drawn through a latent sex and age with
CelebA-like rates and correlations (no beard, mustache or lipstick on women, grey hair and baldness with age,
lipstick and earrings with women...).  :data:`ATTRIBUTE_KIND` says which attributes change the parsing map
("geometry") and which change only colour or texture ("appearance": hair colours, lipstick, make-up, pale skin,
rosy cheeks, facial hair (which CelebAMask-HQ labels as skin), straight against frizzy strands), so that
structure-only and texture-only analysis differ; ``Male`` and ``Young`` are "latent" (seen through their
correlates, face shape, wrinkles and smile lines).

Parsing labels: :data:`CELEBAMASK_LABELS` (CelebAMask-HQ's 19 labels, in its order) or, with
``labels="merged"``, :data:`MERGED_LABELS` (12 classes: left/right parts merged, lips with mouth, earrings
with ears, necklace with neck) through :data:`FULL_TO_MERGED`.  "l_" means the image's left (as CelebA's
``lefteye`` landmark); CelebAMask-HQ's own convention is undocumented (our choice).

Landmarks: :data:`LANDMARKS` (CelebA's five: left eye, right eye, nose tip, left and right mouth corner),
``(x, y)`` in ``[0, 1]`` of the image width and height.

Determinism: faces come in chunks of :attr:`FaceWorld.CHUNK` whose parameters are drawn from
``seeded_rng(seed, split, chunk)``, so item ``i`` is a pure function of ``(seed, split, i)``, ``n=100`` is a prefix
of ``n=1000``, and the same face is drawn at every image size (only the pixel grain and sensor noise are drawn
per size).  Rendering is vectorised in torch over the faces of a chunk (loops only over a handful of parts).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.base import SPLIT_ID, check_split, register_dataset, seeded_rng
from ...data.photos import PHOTOS_TRAIN, skimage_photo
from ...images import resize, to_item_image
from ...paths import cache_dir

# ------------------------------------------------------------------------------------------------ label sets
CELEBAMASK_LABELS = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                     "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
MERGED_LABELS = ("background", "skin", "nose", "eye_g", "eyes", "brows", "ears", "mouth", "hair", "hat", "neck",
                 "cloth")
#: CelebAMask-HQ label index -> merged label index (ear_r -> ears, neck_l -> neck, u_lip/l_lip -> mouth)
FULL_TO_MERGED = np.array([0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7, 8, 9, 6, 10, 10, 11], dtype=np.int64)
LABEL_SETS = {"full": CELEBAMASK_LABELS, "merged": MERGED_LABELS}
#: full label index after a horizontal flip (l_* <-> r_*)
FLIP_LABELS = np.array([0, 1, 2, 3, 5, 4, 7, 6, 9, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18], dtype=np.int64)

#: CelebA attribute names used by FaceWorld, in CelebA's order (a subset of its 40)
ATTRIBUTES = ("Arched_Eyebrows", "Bald", "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Brown_Hair",
              "Bushy_Eyebrows", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "Male", "Mouth_Slightly_Open",
              "Mustache", "Narrow_Eyes", "No_Beard", "Pale_Skin", "Rosy_Cheeks", "Smiling", "Straight_Hair",
              "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Young")
ATTRIBUTE_KIND = {
    **{a: "geometry" for a in ("Arched_Eyebrows", "Bald", "Bangs", "Big_Lips", "Big_Nose", "Bushy_Eyebrows",
                               "Eyeglasses", "Mouth_Slightly_Open", "Narrow_Eyes", "Smiling", "Wavy_Hair",
                               "Wearing_Earrings", "Wearing_Hat", "Wearing_Necklace")},
    **{a: "appearance" for a in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Goatee", "Heavy_Makeup",
                                 "Mustache", "No_Beard", "Pale_Skin", "Rosy_Cheeks", "Straight_Hair",
                                 "Wearing_Lipstick")},
    "Male": "latent", "Young": "latent",
}
LANDMARKS = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
FLIP_LANDMARKS = np.array([1, 0, 2, 4, 3])

# ------------------------------------------------------------------------------------------------ materials
# Internal materials: finer than the labels (sclera, iris and lashes are all "eye"), one label each.
(M_BG, M_SKIN, M_NOSE, M_FRAME, M_LENS_DARK, M_LENS_CLEAR, M_EYE_L, M_EYE_R, M_IRIS_L, M_IRIS_R, M_LASH_L,
 M_LASH_R, M_BROW_L, M_BROW_R, M_EAR_L, M_EAR_R, M_MOUTH, M_TEETH, M_ULIP, M_LLIP, M_HAIR, M_HAT, M_EARRING,
 M_NECKLACE, M_NECK, M_CLOTH, M_BEARD, M_NOSTRIL) = range(28)
N_MATERIALS = 28
_L = {n: i for i, n in enumerate(CELEBAMASK_LABELS)}
MATERIAL_LABEL = np.array([_L[n] for n in (
    "background", "skin", "nose", "eye_g", "eye_g", "eye_g", "l_eye", "r_eye", "l_eye", "r_eye", "l_eye", "r_eye",
    "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
    "neck", "cloth", "skin", "nose")], dtype=np.uint8)
_SKINLIKE = (M_SKIN, M_NOSE, M_EAR_L, M_EAR_R, M_NECK, M_LENS_CLEAR)

FCY, CRANIUM_CY = 0.03, -0.10  # face-frame v of the face ellipse's and the cranium's centres
FACES_EVAL_N = 1000  # faces in the val and test splits that build_dataset makes


# ------------------------------------------------------------------------------------------------ parameters
def sample_face_params(rng: np.random.Generator, n: int) -> dict:
    """Latents, attributes and drawing parameters of ``n`` faces (numpy arrays, first axis = face).

    The attribute model (rates roughly CelebA's; rare ones raised so that small sets hold enough of them):
    sex ``Male`` ~ Bernoulli(0.42); age in [0, 1] (``Young`` = age < 0.5; P(Young | female) ~ 0.87, P(Young |
    male) ~ 0.63); the others are drawn given sex and age, and fine attributes are thresholds of continuous
    shape latents.  ``params["attributes"]`` is uint8 ``(n, len(ATTRIBUTES))``.
    """
    B = int(n)
    U = lambda lo=0.0, hi=1.0, shape=(B,): rng.uniform(lo, hi, shape)  # noqa: E731
    bern = lambda p: rng.random(B) < p  # noqa: E731
    p: dict = {}
    male = bern(0.42)
    age = rng.random(B) ** np.where(male, 1.5, 5.0)          # 0 = twenties, 1 = old
    young = age < 0.5
    old = np.clip((age - 0.45) / 0.55, 0, 1)
    f = ~male

    # -- pose and face shape --------------------------------------------------------------------------------
    p["cx"], p["cy"] = np.clip(rng.normal(0, 0.05, B), -0.1, 0.1), np.clip(rng.normal(0.02, 0.04, B), -0.06, 0.1)
    p["scale"] = U(0.86, 1.04)
    p["roll"] = np.clip(rng.normal(0, 0.14, B), -0.38, 0.38)     # radians (about +-8 degrees, at most 22)
    p["fa"] = U(0.37, 0.42) + 0.025 * male                      # face half width
    p["fb"] = U(0.50, 0.56)                                     # face half height
    p["taper"] = U(0.18, 0.38) - 0.1 * male                     # jaw taper (men squarer)
    p["neck_w"] = U(0.15, 0.19) + 0.03 * male
    p["cloth_top"] = U(0.70, 0.80)
    p["vneck"] = U(0.0, 0.25)
    p["shoulder_w"] = U(0.70, 0.95)
    p["ear_v"] = U(0.0, 0.05)

    # -- hair -------------------------------------------------------------------------------------------------
    bald = male & bern(0.02 + 0.3 * old)
    long_hair = ~bald & bern(np.where(male, 0.08, 0.78))
    p["bald"], p["long"] = bald, long_hair
    p["long_len"] = U(0.45, 1.1)
    p["hair_vol"] = U(0.04, 0.10) + 0.03 * long_hair
    p["hairline"] = U(-0.44, -0.32) - 0.08 * (male & (old > 0.3))  # receding with age
    p["cover_ears"] = ~bald & (long_hair | bern(0.15))
    bangs = ~bald & bern(np.where(male, 0.08, 0.24))
    p["bangs"], p["bang_len"], p["bang_freq"], p["bang_phase"] = bangs, U(0.0, 0.06), U(8, 20), U(0, 2 * np.pi)
    wavy = ~bald & bern(np.where(male, 0.15, 0.45))
    straight = ~bald & ~wavy & bern(0.35)
    p["wavy"], p["wave_amp"], p["wave_freq"], p["wave_phase"] = wavy, U(0.025, 0.05), U(9, 16), U(0, 2 * np.pi)
    # hair colour: 0 black, 1 brown, 2 blond, 3 grey, 4 other (auburn, dyed)
    gray = bern(0.01 + 0.45 * old)
    cat = np.where(f, rng.choice(5, B, p=[0.26, 0.30, 0.30, 0.0, 0.14]),
                   rng.choice(5, B, p=[0.42, 0.35, 0.08, 0.0, 0.15]))
    cat = np.where(gray, 3, cat)
    base = np.array([[0.08, 0.065, 0.06], [0.34, 0.21, 0.12], [0.86, 0.71, 0.46], [0.72, 0.71, 0.72],
                     [0.55, 0.22, 0.10]], dtype=np.float64)
    hair = base[cat] * U(0.75, 1.25)[:, None] * U(0.92, 1.08, (B, 3))
    p["hair_cat"], p["hair_rgb"] = cat, np.clip(hair, 0.02, 0.98)
    p["hair_noise"] = rng.standard_normal((B, 1, 8, 36)).astype(np.float32)    # strands along the face frame v
    p["curl_noise"] = rng.standard_normal((B, 1, 14, 14)).astype(np.float32)   # neither straight nor wavy: frizz
    p["straight"] = straight

    # -- eyes, brows, nose, mouth ------------------------------------------------------------------------------
    smiling = bern(0.48)
    narrow_p = 0.08 + 0.12 * old + 0.06 * smiling
    narrow = bern(narrow_p)
    p["eye_open"] = np.where(narrow, U(0.24, 0.40), U(0.40, 0.66)) * np.where(smiling, 0.9, 1.0)  # height / width
    p["eye_d"], p["eye_v"], p["eye_w"] = U(0.155, 0.185), U(-0.07, -0.02), U(0.075, 0.092)
    p["gaze"] = rng.normal(0, 0.012, (B, 2))
    p["iris_rgb"] = np.array([[0.25, 0.14, 0.07], [0.20, 0.30, 0.45], [0.22, 0.30, 0.18]])[
        rng.choice(3, B, p=[0.6, 0.25, 0.15])] * U(0.7, 1.3)[:, None]
    bushy = bern(np.where(male, 0.26, 0.06))
    p["brow_th"] = np.where(bushy, U(0.040, 0.058), U(0.020, 0.040))
    arched = bern(np.where(male, 0.10, 0.45))
    p["brow_arch"] = np.where(arched, U(0.030, 0.050), U(0.0, 0.030))
    p["brow_gap"], p["brow_w"] = U(0.085, 0.11), U(0.085, 0.11)
    big_nose = bern(0.12 + 0.2 * male + 0.2 * old)
    nose = np.where(big_nose, U(1.2, 1.5), U(0.82, 1.12))
    p["nose_w"], p["nose_h"], p["nose_v"] = 0.062 * nose, 0.11 * np.sqrt(nose), U(0.08, 0.12)
    mouth_open = bern(np.where(smiling, 0.7, 0.25))
    p["smiling"] = smiling
    p["smile"] = np.where(smiling, U(0.045, 0.085), U(-0.015, 0.02))     # corners raised by this much
    p["open_gap"] = np.where(mouth_open, U(0.03, 0.07), 0.0)
    p["mouth_w"] = U(0.11, 0.14) + 0.3 * np.maximum(p["smile"], 0)
    p["mouth_v"] = U(0.31, 0.35)
    big_lips = bern(np.where(male, 0.16, 0.32))
    p["lip_th"] = np.where(big_lips, U(1.45, 1.9), U(0.8, 1.2)) * 0.022

    # -- skin, make-up, facial hair ---------------------------------------------------------------------------
    pale = bern(np.where(male, 0.03, 0.07))
    tone = rng.beta(1.4, 3.0, B)
    light, dark = np.array([0.94, 0.78, 0.66]), np.array([0.42, 0.27, 0.19])
    skin = light * (1 - tone[:, None]) + dark * tone[:, None]
    pale_rgb = np.array([0.97, 0.90, 0.86]) * U(0.95, 1.02)[:, None]
    p["skin_rgb"] = np.where(pale[:, None], pale_rgb, skin * U(0.97, 1.03, (B, 3)))
    p["skin_noise"] = rng.standard_normal((B, 1, 6, 6)).astype(np.float32)
    p["grain"] = U(0.015, 0.03) + 0.04 * old
    p["age"] = age
    lipstick = f & bern(0.78)
    makeup = lipstick & bern(0.75)
    p["lip_rgb"] = np.where(lipstick[:, None], np.stack([U(0.62, 0.9), U(0.05, 0.22), U(0.12, 0.32)], 1),
                            p["skin_rgb"] * np.array([0.82, 0.58, 0.58]))
    p["makeup"] = makeup
    p["shadow_rgb"] = np.array([[0.35, 0.22, 0.30], [0.30, 0.25, 0.20], [0.25, 0.30, 0.40]])[rng.choice(3, B)]
    rosy = bern(np.where(f & young, 0.14, 0.03))
    p["rosy"] = rosy
    mustache = male & bern(0.10 + 0.15 * old)
    beard = np.where(male, rng.choice(3, B, p=[0.62, 0.14, 0.24]), 0)   # 0 none, 1 goatee, 2 full
    p["mustache"], p["beard"], p["beard_density"] = mustache, beard, U(0.55, 0.9)

    # -- accessories -------------------------------------------------------------------------------------------
    glasses = bern(0.05 + 0.04 * male + 0.12 * old)
    p["glasses"], p["sunglasses"] = glasses, glasses & bern(0.3)
    p["lens_rx"], p["lens_ry"], p["frame_th"] = U(0.10, 0.13), U(0.065, 0.09), U(0.014, 0.024)
    p["frame_rgb"] = np.where(bern(0.7)[:, None], U(0.03, 0.25)[:, None] * np.ones(3),
                              np.array([0.75, 0.62, 0.35]) * U(0.8, 1.1)[:, None])
    hat = bern(0.07)
    p["hat"], p["hat_brim_v"], p["hat_brim_ext"] = hat, U(-0.30, -0.18), np.where(bern(0.5), U(0.10, 0.2), 0.02)
    p["hat_rgb"], p["hat_stripes"] = U(0.05, 0.95, (B, 3)), U(0, 1) < 0.5
    earrings = bern(np.where(male, 0.03, 0.36))
    necklace = bern(np.where(male, 0.02, 0.22))
    metal = np.where(bern(0.5)[:, None], np.array([0.95, 0.78, 0.32]), np.array([0.88, 0.88, 0.92]))
    p["earrings"], p["necklace"], p["metal_rgb"] = earrings, necklace, metal
    p["cloth_rgb"], p["cloth_rgb2"] = U(0.03, 0.95, (B, 3)), U(0.03, 0.95, (B, 3))
    p["cloth_stripes"], p["cloth_freq"] = U(0, 1) < 0.35, U(6, 16)

    # -- light, camera, background -----------------------------------------------------------------------------
    p["light_az"], p["light_el"], p["ambient"] = U(0, 2 * np.pi), U(0.15, 0.95), U(0.35, 0.6)
    p["light_rgb"] = U(0.95, 1.05, (B, 3))
    p["exposure"] = U(0.95, 1.2)
    p["bg_id"], p["bg_y"], p["bg_x"], p["bg_flip"] = rng.integers(0, 1 << 30, B), U(), U(), U() < 0.5
    p["bg_contrast"] = U(0.35, 0.8)
    p["blur"] = U(0.3, 0.8)            # lens blur sigma in pixels at 64 px
    p["noise_read"], p["noise_shot"] = U(0.004, 0.03), U(0.0003, 0.003)

    attrs = {
        "Arched_Eyebrows": arched, "Bald": bald, "Bangs": bangs, "Big_Lips": big_lips, "Big_Nose": big_nose,
        "Black_Hair": cat == 0, "Blond_Hair": cat == 2, "Brown_Hair": cat == 1, "Bushy_Eyebrows": bushy,
        "Eyeglasses": glasses, "Goatee": beard == 1, "Gray_Hair": cat == 3, "Heavy_Makeup": makeup, "Male": male,
        "Mouth_Slightly_Open": mouth_open, "Mustache": mustache, "Narrow_Eyes": narrow, "No_Beard": beard == 0,
        "Pale_Skin": pale, "Rosy_Cheeks": rosy, "Smiling": smiling, "Straight_Hair": straight, "Wavy_Hair": wavy,
        "Wearing_Earrings": earrings, "Wearing_Hat": hat, "Wearing_Lipstick": lipstick,
        "Wearing_Necklace": necklace, "Young": young,
    }
    p["attributes"] = np.stack([attrs[a] for a in ATTRIBUTES], axis=1).astype(np.uint8)
    return p


def set_attribute(params: dict, name: str, value: bool) -> dict:
    """A copy of ``params`` with one appearance attribute forced (for tests and the chapter's demos).

    Supported: ``Wearing_Lipstick``, ``Pale_Skin``, hair colours (``Black_Hair`` ...), ``Smiling``,
    ``Mouth_Slightly_Open``.  The latent parameters are set so that the drawing follows the attribute.
    """
    q = {k: np.array(v, copy=True) for k, v in params.items()}
    i = ATTRIBUTES.index(name)
    q["attributes"][:, i] = int(value)
    if name == "Wearing_Lipstick":
        q["lip_rgb"][:] = [0.8, 0.1, 0.2] if value else q["skin_rgb"] * np.array([0.82, 0.58, 0.58])
    elif name == "Pale_Skin":
        q["skin_rgb"][:] = [0.97, 0.9, 0.86] if value else [0.8, 0.6, 0.47]
    elif name in ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair"):
        cat = {"Black_Hair": 0, "Brown_Hair": 1, "Blond_Hair": 2, "Gray_Hair": 3}[name] if value else 4
        q["hair_rgb"][:] = [[0.08, 0.065, 0.06], [0.34, 0.21, 0.12], [0.86, 0.71, 0.46], [0.72, 0.71, 0.72],
                            [0.55, 0.22, 0.1]][cat]
        for other in ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair"):
            q["attributes"][:, ATTRIBUTES.index(other)] = int(other == name and value)
    elif name == "Smiling":
        q["smile"][:], q["smiling"][:] = (0.065 if value else 0.0), bool(value)
    elif name == "Mouth_Slightly_Open":
        q["open_gap"][:] = 0.05 if value else 0.0
    else:
        raise ValueError(f"set_attribute supports Wearing_Lipstick, Pale_Skin, hair colours, Smiling and "
                         f"Mouth_Slightly_Open, got {name!r}")
    return q


# ------------------------------------------------------------------------------------------------ rendering
_BACKGROUNDS: dict = {}


def background_pool(size: int) -> np.ndarray:
    """uint8 ``(P, 2*size, 2*size, 3)``: the centre square and two corner squares of every training photo
    (:data:`cdlib.data.photos.PHOTOS_TRAIN`; never the held-out astronaut, coffee and rocket)."""
    if size not in _BACKGROUNDS:
        pool = []
        for name in PHOTOS_TRAIN:
            img = skimage_photo(name)
            h, w = img.shape[:2]
            s = min(h, w)
            for y, x in sorted({((h - s) // 2, (w - s) // 2), (0, 0), (h - s, w - s)}):
                pool.append(resize(img[y:y + s, x:x + s], (2 * size, 2 * size)))
        _BACKGROUNDS[size] = np.stack(pool)
    return _BACKGROUNDS[size]


def _t(params: dict, key: str, B: int) -> torch.Tensor:
    return torch.as_tensor(np.asarray(params[key], dtype=np.float32)).reshape(B, 1, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of ``x`` (B, C, S, S) with ``sigma`` (B,) pixels."""
    B, C, S, _ = x.shape
    r = max(1, int(math.ceil(2 * float(sigma.max()))))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32)[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)                      # (B*C, 2r+1)
    y = F.pad(x.reshape(1, B * C, S, S), (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, S, S)


def render_faces(params: dict, size: int, rng: np.random.Generator) -> dict:
    """Draw the faces of ``params`` (from :func:`sample_face_params`) at ``size x size``.

    ``rng`` seeds only the pixel-level randomness (skin grain, sensor noise).  Returns ``images`` uint8
    ``(B, S, S, 3)``, ``parsing`` uint8 ``(B, S, S)`` (CelebAMask-HQ labels), ``materials`` uint8 ``(B, S, S)``
    and ``landmarks`` float32 ``(B, 5, 2)`` (x, y in [0, 1]).
    """
    B, S = len(params["attributes"]), int(size)
    P = lambda k: _t(params, k, B)  # noqa: E731
    g = (torch.arange(S, dtype=torch.float32) + 0.5) / S * 2 - 1
    X, Y = g.view(1, 1, S), g.view(1, S, 1)
    cos, sin, sc = torch.cos(P("roll")), torch.sin(P("roll")), P("scale")
    dx, dy = X - P("cx"), Y - P("cy")
    u = (cos * dx + sin * dy) / sc          # face frame: u right, v down, face about 0.8 wide
    v = (-sin * dx + cos * dy) / sc
    au, left = u.abs(), u < 0
    mat = torch.zeros(B, S, S, dtype=torch.uint8)

    def paint(mask, m_left, m_right=None):
        if m_right is None:
            mat.masked_fill_(mask, m_left)
        else:
            mat.masked_fill_(mask & left, m_left)
            mat.masked_fill_(mask & ~left, m_right)

    def flag(k):
        return torch.as_tensor(np.asarray(params[k], dtype=bool)).view(B, 1, 1)

    def is_(*ms):
        out = mat == ms[0]
        for m in ms[1:]:
            out |= mat == m
        return out

    fa, fb, hv = P("fa"), P("fb"), P("hair_vol")
    bald, long_hair = flag("bald"), flag("long")
    wavy = flag("wavy")
    dvf = v - FCY
    w = fa * (1 - P("taper") * dvf.clamp(min=0) / fb)                      # face half width at v
    face = (u / w) ** 2 + (dvf / fb) ** 2 <= 1
    cranium = (u / fa) ** 2 + ((v - CRANIUM_CY) / (fb * 0.92)) ** 2 <= 1
    head = face | cranium
    wave = torch.where(wavy, P("wave_amp") * torch.sin(v * P("wave_freq") + P("wave_phase")), torch.zeros(()))
    hair_out = ((u / (fa + hv + wave)) ** 2 + ((v - CRANIUM_CY) / (fb * 0.92 + hv)) ** 2 <= 1) & (v < 0.05)
    long_len = P("long_len")
    long_reg = long_hair & (au < fa + hv + 0.03 + wave) & (v > -0.2) & (v < long_len - 0.15 * (au / (fa + hv)) ** 2)

    # back to front ---------------------------------------------------------------------------------------------
    paint((hair_out | long_reg) & ~bald, M_HAIR)
    nw, ctop = P("neck_w"), P("cloth_top")
    paint((au < nw) & (v > 0.2), M_NECK)
    depth = P("vneck")
    vneck = (v >= ctop) & (au < nw * (1 - (v - ctop) / depth.clamp(min=1e-3)))
    paint((v > ctop + 0.12 * (au / 0.6) ** 2) & (au < P("shoulder_w") + 0.3 * (v - ctop)) & ~vneck, M_CLOTH)
    paint(flag("necklace") & ((v - (ctop + 0.01 - 1.2 * u ** 2)).abs() < 0.014) & (au < nw * 1.02), M_NECKLACE)
    paint(long_reg & (au > nw + 0.015) & (v > 0.2), M_HAIR)                 # long hair over the shoulders
    ear_u, ear_v = fa * 0.98, P("ear_v")
    paint(((au - ear_u) / 0.055) ** 2 + ((v - ear_v) / 0.10) ** 2 <= 1, M_EAR_L, M_EAR_R)
    paint(head, M_SKIN)
    hairline = P("hairline") + 0.28 * (u / fa) ** 2
    paint(head & ~bald & (v < hairline), M_HAIR)
    paint(head & bald & (au > 0.82 * fa) & (v < -0.02) & (v > -0.3), M_HAIR)  # a bald head keeps a side fringe

    # nose: a drop widening downwards, nostrils at its base
    nv, nh, nwid = P("nose_v"), P("nose_h"), P("nose_w")
    grow = ((v - (nv - nh)) / (2 * nh)).clamp(0, 1)
    paint(is_(M_SKIN) & (au < nwid * (0.4 + 0.6 * grow ** 0.7)) & ((v - nv).abs() < nh), M_NOSE)
    paint(((au - nwid * 0.5) / (nwid * 0.32)) ** 2 + ((v - (nv + nh * 0.78)) / (nh * 0.16)) ** 2 <= 1, M_NOSTRIL)

    # facial hair (labelled skin, as in CelebAMask-HQ)
    mv, mw, smile, gap, lip = P("mouth_v"), P("mouth_w"), P("smile"), P("open_gap"), P("lip_th")
    beard = torch.as_tensor(np.asarray(params["beard"])).view(B, 1, 1)
    full = (beard == 2) & face & ((v > 0.17) & ((au > w * 0.55) | (v > mv + 0.04)) | (v > mv + 0.02))
    goatee = (beard == 1) & face & (au < 0.12) & (v > mv + 0.035)
    moust = flag("mustache") & (au < mw * 1.05) & (v > nv + nh + 0.004) & (v < mv - 0.02 - smile * (u / mw) ** 2)
    paint(is_(M_SKIN) & (full | goatee | moust), M_BEARD)

    # mouth: lips around a centre line whose corners rise with the smile
    pm = (1 - (u / mw) ** 2).clamp(min=0)
    inside = au < mw
    yc = mv - smile * (u / mw) ** 2
    g2 = gap * pm.sqrt() / 2
    top, bot = yc - g2, yc + g2
    paint(inside & (v >= top - lip * 0.85 * pm ** 0.6) & (v < top), M_ULIP)
    paint(inside & (v > bot) & (v <= bot + lip * pm ** 0.6), M_LLIP)
    inner = inside & (v >= top) & (v <= bot) & (gap > 0)
    paint(inner, M_MOUTH)
    paint(inner & (v < yc + g2 * 0.3) & (smile > 0.03), M_TEETH)

    # eyes: sclera, iris, upper lashes
    ed, ev, ew = P("eye_d"), P("eye_v"), P("eye_w")
    eh = ew * P("eye_open")
    eye = ((au - ed) / ew) ** 2 + ((v - ev) / eh) ** 2 <= 1
    paint(eye, M_EYE_L, M_EYE_R)
    gaze = torch.as_tensor(np.asarray(params["gaze"], dtype=np.float32))
    du = u - torch.where(left, -ed, ed) - gaze[:, 0].view(B, 1, 1)
    paint(eye & (du ** 2 + (v - ev - gaze[:, 1].view(B, 1, 1)) ** 2 <= (ew * 0.48) ** 2), M_IRIS_L, M_IRIS_R)
    paint(eye & (v < ev - 0.45 * eh), M_LASH_L, M_LASH_R)

    # brows: an arch above each eye, thicker at the inner end
    bw = P("brow_w")
    bu = (au - ed - 0.01) / bw
    vb = ev - P("brow_gap") - P("brow_arch") * (1 - bu ** 2)
    paint((bu.abs() < 1) & ((v - vb).abs() < P("brow_th") / 2 * (1 - 0.3 * bu)) & head, M_BROW_L, M_BROW_R)

    # glasses: lenses (dark ones hide the eyes), rims, bridge, arms
    gl, sun = flag("glasses"), flag("sunglasses")
    rx, ry, ft = P("lens_rx"), P("lens_ry"), P("frame_th")
    r = (((au - ed) / rx) ** 2 + ((v - ev - 0.005) / ry) ** 2).sqrt()
    lens = gl & (r <= 1)
    paint(lens & sun, M_LENS_DARK)
    paint(lens & ~sun & is_(M_SKIN, M_NOSE, M_BEARD), M_LENS_CLEAR)
    bar = (v - ev + 0.015).abs() < ft * 0.6
    paint(gl & ((lens & (r >= 1 - ft / ry)) | (bar & (au < ed - rx * 0.9)) | (bar & (au > ed + rx * 0.9) & (au < fa))),
          M_FRAME)

    # hair in front: over the ears, bangs over the brows
    side = (au > w * 0.9) & (au < fa + hv + 0.01 + wave) & (v > hairline - 0.05) & \
        ((v < ear_v + 0.13) | (long_hair & (v < long_len)))
    paint(flag("cover_ears") & side, M_HAIR)
    bang_edge = ev - P("brow_gap") + P("bang_len") + 0.018 * torch.sin(u * P("bang_freq") + P("bang_phase"))
    paint(flag("bangs") & head & (v < bang_edge), M_HAIR)
    paint(flag("earrings") & ((au - ear_u) ** 2 + (v - ear_v - 0.125) ** 2 <= 0.03 ** 2), M_EARRING)

    # hat over the hair
    brim = P("hat_brim_v")
    crown = ((u / (fa + hv + 0.05)) ** 2 + ((v - CRANIUM_CY) / (fb * 0.92 + hv + 0.07)) ** 2 <= 1) & (v < brim)
    paint(flag("hat") & (crown | (((v - brim).abs() < 0.035) & (au < fa + hv + P("hat_brim_ext")))), M_HAT)

    # ----------------------------------------------------------------------------------------------- colour
    pal = torch.zeros(B, N_MATERIALS, 3)
    A = lambda k: torch.as_tensor(np.asarray(params[k], dtype=np.float32))  # noqa: E731
    skin, hair = A("skin_rgb"), A("hair_rgb")
    for m, c in ((M_SKIN, skin), (M_NOSE, skin * 0.97), (M_EAR_L, skin * 0.93), (M_EAR_R, skin * 0.93),
                 (M_NECK, skin * 0.88), (M_LENS_CLEAR, skin * 0.8 + 0.12), (M_NOSTRIL, skin * 0.4),
                 (M_FRAME, A("frame_rgb")), (M_LENS_DARK, torch.tensor([0.05, 0.05, 0.07])),
                 (M_EYE_L, torch.tensor([0.86, 0.83, 0.8])), (M_EYE_R, torch.tensor([0.86, 0.83, 0.8])),
                 (M_IRIS_L, A("iris_rgb")), (M_IRIS_R, A("iris_rgb")),
                 (M_LASH_L, torch.tensor([0.07, 0.05, 0.05])), (M_LASH_R, torch.tensor([0.07, 0.05, 0.05])),
                 (M_BROW_L, hair * 0.7), (M_BROW_R, hair * 0.7), (M_MOUTH, torch.tensor([0.33, 0.08, 0.09])),
                 (M_TEETH, torch.tensor([0.92, 0.9, 0.82])), (M_ULIP, A("lip_rgb") * 0.88), (M_LLIP, A("lip_rgb")),
                 (M_HAIR, hair), (M_HAT, A("hat_rgb")), (M_EARRING, A("metal_rgb")), (M_NECKLACE, A("metal_rgb")),
                 (M_CLOTH, A("cloth_rgb")), (M_BEARD, hair * 0.6)):
        pal[:, m] = c
    mat_l = mat.long()
    img = pal[torch.arange(B).view(B, 1, 1), mat_l]                              # (B, S, S, 3)

    # skin: smooth blotches and grain (more with age)
    lf = F.interpolate(torch.as_tensor(params["skin_noise"]), size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
    grain = torch.randn((B, S, S), generator=gen)
    skinlike = torch.as_tensor(np.isin(np.arange(N_MATERIALS), _SKINLIKE))[mat_l]
    img = img * torch.where(skinlike, 1 + 0.045 * lf + P("grain") * grain, torch.ones(()))[..., None]
    # hair strands in the face frame (warped by the waves): hair, brows, facial hair
    grid = torch.stack([(u + wave * 0.6) / 1.1, v / 1.1], dim=-1)
    strands = F.grid_sample(torch.as_tensor(params["hair_noise"]), grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)[:, 0]
    frizz = F.grid_sample(torch.as_tensor(params["curl_noise"]), grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)[:, 0]
    strands = torch.where(flag("straight") | wavy, strands, frizz)                # strands: straight or wavy hair
    strands = torch.sigmoid(1.5 * strands)                                         # (B, S, S) in (0, 1)
    is_hair = mat == M_HAIR
    img = torch.where(is_hair[..., None], img * (0.55 + 0.9 * strands)[..., None], img)
    img = torch.where(is_(M_BROW_L, M_BROW_R)[..., None], img * (0.75 + 0.5 * strands)[..., None], img)
    alpha = (P("beard_density") * (0.35 + 0.65 * strands))[..., None]
    img = torch.where((mat == M_BEARD)[..., None], skin.view(B, 1, 1, 3) * (1 - alpha) + img * alpha, img)
    # clothes and hats: stripes or plain
    stripes = (torch.sin(u * P("cloth_freq") * math.pi) > 0)[..., None]
    c2 = A("cloth_rgb2").view(B, 1, 1, 3)
    img = torch.where((mat == M_CLOTH)[..., None] & flag("cloth_stripes")[..., None] & stripes, c2, img)
    knit = 0.8 + 0.2 * (torch.sin(v * 60) > 0).float()
    img = torch.where((mat == M_HAT)[..., None] & flag("hat_stripes")[..., None], img * knit[..., None], img)
    # make-up, rosy cheeks, wrinkles (on skin only)
    on_skin = (mat == M_SKIN)[..., None]
    dshadow = ((au - ed) / (ew * 1.5)) ** 2 + ((v - ev + eh + 0.02) / 0.035) ** 2
    a = (flag("makeup") * 0.55 * (1 - dshadow).clamp(min=0))[..., None]
    img = torch.where(on_skin, img * (1 - a) + A("shadow_rgb").view(B, 1, 1, 3) * a, img)
    dr = ((au - 0.22) ** 2 + (v - 0.17) ** 2) / 0.075 ** 2
    a = (flag("rosy") * 0.45 * torch.exp(-dr))[..., None]
    img = torch.where(on_skin, img * (1 - a) + torch.tensor([0.85, 0.3, 0.32]) * a, img)
    wr = (P("age") - 0.4).clamp(min=0) * 0.5
    fold = ((au - (nwid + 0.025 + 0.3 * (v - nv - nh * 0.4))).abs() < 0.011) & (v > nv) & (v < mv)
    bags = ((au - ed) / ew) ** 2 + ((v - ev - eh - 0.022) / 0.012) ** 2 <= 1
    img = torch.where(on_skin & bags[..., None], img * (1 - wr)[..., None], img)
    wf = torch.maximum(wr, 0.22 * flag("smiling"))                                  # smile lines deepen the folds
    img = torch.where(on_skin & fold[..., None], img * (1 - wf)[..., None], img)

    # light: Lambertian shading of an ellipsoidal head (the nose bulges), coloured light, exposure
    nx = u / (fa + 0.25) + 0.6 * (u / nwid).clamp(-1, 1) * (mat == M_NOSE)
    ny = (v + 0.05) / (fb + 0.25)
    nz = (1 - nx ** 2 - ny ** 2).clamp(min=0.05).sqrt()
    nn = (nx ** 2 + ny ** 2 + nz ** 2).sqrt()
    az, el = P("light_az"), P("light_el")
    ndl = (nx * torch.sin(el) * torch.cos(az) + ny * torch.sin(el) * torch.sin(az) + nz * torch.cos(el)) / nn
    amb = P("ambient")
    shade = (amb + (1 - amb) * ndl.clamp(min=0)) * P("exposure")
    img = img * shade[..., None]

    # background: a window of a training photo, flattened in contrast
    pool = background_pool(S)
    bid = np.asarray(params["bg_id"]) % len(pool)
    y0 = np.round(np.asarray(params["bg_y"]) * S).astype(np.int64)
    x0 = np.round(np.asarray(params["bg_x"]) * S).astype(np.int64)
    rows = y0[:, None] + np.arange(S)
    cols = x0[:, None] + np.arange(S)
    cols = np.where(np.asarray(params["bg_flip"])[:, None], cols[:, ::-1], cols)
    bg = torch.from_numpy(pool[bid[:, None, None], rows[:, :, None], cols[:, None, :]]).float() / 255
    mean = bg.mean(dim=(1, 2), keepdim=True)
    bg = mean + (bg - mean) * P("bg_contrast")[..., None]
    img = torch.where((mat == M_BG)[..., None], bg, img) * A("light_rgb").view(B, 1, 1, 3)

    # camera: lens blur, shot and read noise, 8 bits
    x = _blur(img.permute(0, 3, 1, 2).clamp(0, 1), torch.as_tensor(np.asarray(params["blur"], np.float32)) * S / 64)
    shot, read = _t(params, "noise_shot", B)[..., None], _t(params, "noise_read", B)[..., None]
    x = x + (x * shot + read ** 2).sqrt() * torch.randn((B, 3, S, S), generator=gen)  # shot + read noise
    images = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    # landmarks: face frame -> image [0, 1]
    cs, sn = np.cos(params["roll"]), np.sin(params["roll"])
    ed_, ev_, mw_, mv_, sm_ = (np.asarray(params[k], dtype=np.float64) for k in
                               ("eye_d", "eye_v", "mouth_w", "mouth_v", "smile"))
    lu = np.stack([-ed_, ed_, 0 * ed_, -mw_, mw_], 1)
    lv = np.stack([ev_, ev_, params["nose_v"] + 0.72 * params["nose_h"], mv_ - sm_, mv_ - sm_], 1)
    s_, cx_, cy_ = (np.asarray(params[k])[:, None] for k in ("scale", "cx", "cy"))
    lx = cx_ + s_ * (cs[:, None] * lu - sn[:, None] * lv)
    ly = cy_ + s_ * (sn[:, None] * lu + cs[:, None] * lv)
    landmarks = np.stack([(lx + 1) / 2, (ly + 1) / 2], axis=-1).astype(np.float32)
    mat_np = mat.numpy()
    return {"images": images, "parsing": MATERIAL_LABEL[mat_np], "materials": mat_np, "landmarks": landmarks}


# ------------------------------------------------------------------------------------------------ dataset
class FaceWorld(torch.utils.data.Dataset):
    """Seeded procedural faces: ``{"image", "parsing", "attributes", "landmarks"}`` items.

    ``image`` float32 ``(3, S, S)`` in [0, 1]; ``parsing`` int64 ``(S, S)`` with the labels of
    ``labels`` (``"full"``: :data:`CELEBAMASK_LABELS`, ``"merged"``: :data:`MERGED_LABELS`); ``attributes``
    float32 ``(len(ATTRIBUTES),)`` of 0/1; ``landmarks`` float32 ``(5, 2)`` (x, y) in [0, 1] (:data:`LANDMARKS`).

    Faces come in chunks of :attr:`CHUNK` whose parameters are seeded by ``(seed, split, chunk)`` (the pixel noise by
    fixed sub-batches of a chunk): item ``i`` is a pure function of
    ``(seed, split, i)`` whatever ``n``, and the same face (up to grain and sensor noise) at every
    ``image_size``.  Arrays are cached under :func:`cdlib.paths.cache_dir` (``cache=False`` skips it).  With
    ``augment`` (off by default; the ``faceworld`` builder turns it on for training) items are flipped as a
    function of ``(aug_seed, epoch, i)``, with l/r labels and landmarks swapped.
    """

    LABEL_SETS = LABEL_SETS
    ATTRIBUTES = ATTRIBUTES
    VERSION = 1
    CHUNK = 256

    def __init__(self, split: str = "train", n: int = 4000, image_size: int = 64, seed: int = 0,
                 labels: str = "full", augment: bool = False, aug_seed: int = 0, cache: bool = True,
                 progress: bool = False):
        check_split(split)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        if labels not in LABEL_SETS:
            raise ValueError(f"labels must be one of {tuple(LABEL_SETS)}, got {labels!r}")
        self.split, self.n, self.image_size, self.seed = split, int(n), int(image_size), int(seed)
        self.labels, self.augment, self.aug_seed, self.epoch = labels, bool(augment), int(aug_seed), 0
        self.label_names = LABEL_SETS[labels]
        self.num_classes, self.num_attributes = len(self.label_names), len(ATTRIBUTES)
        arrays = self._load_or_generate(cache, progress)
        self.images: np.ndarray = arrays["images"]            # uint8 (N, S, S, 3)
        self.parsing: np.ndarray = arrays["parsing"]          # uint8 (N, S, S), CelebAMask-HQ labels
        self.attributes: np.ndarray = arrays["attributes"]    # uint8 (N, A)
        self.landmarks: np.ndarray = arrays["landmarks"]      # float32 (N, 5, 2)

    def _cache_path(self) -> Path:
        key = f"v{self.VERSION}-{self.split}-{self.n}-{self.image_size}-{self.seed}"
        return cache_dir() / "faceworld" / f"{key}.npz"

    def _load_or_generate(self, cache: bool, progress: bool) -> dict:
        keys = ("images", "parsing", "attributes", "landmarks")
        path = self._cache_path()
        if cache and path.is_file():
            try:
                with np.load(path) as z:
                    return {k: z[k] for k in keys}
            except Exception:  # a damaged cache file is regenerated, never trusted
                pass
        from ...progress import progress_bar

        tqdm = progress_bar()
        n_chunks = -(-self.n // self.CHUNK)
        parts = [self.chunk(c, min(self.CHUNK, self.n - c * self.CHUNK))
                 for c in tqdm(range(n_chunks), desc=f"FaceWorld {self.split}", disable=not progress)]
        arrays = {k: np.concatenate([p[k] for p in parts])[: self.n] for k in keys}
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        return arrays

    def chunk_params(self, c: int) -> dict:
        """The parameters of chunk ``c`` (faces ``c*CHUNK ... (c+1)*CHUNK - 1``): independent of the image size."""
        return sample_face_params(seeded_rng(self.seed, SPLIT_ID[self.split], c, 0xFACE), self.CHUNK)

    def chunk(self, c: int, count: int | None = None) -> dict:
        """Render the first ``count`` faces (default all) of chunk ``c``.

        Faces are drawn in sub-batches of a fixed size per image size (64 faces at 64 px, the same number of
        pixels above), each with its own pixel-noise stream seeded by ``(seed, split, chunk, size, sub-batch)``,
        so a face does not depend on how many faces are drawn.
        """
        params = self.chunk_params(c)
        S = self.image_size
        count = self.CHUNK if count is None else int(count)
        step = max(8, 64 * 64 * 64 // S ** 2)
        out = []
        for j, a in enumerate(range(0, count, step)):
            sub = {k: v[a:a + step] for k, v in params.items()}
            out.append(render_faces(sub, S, seeded_rng(self.seed, SPLIT_ID[self.split], c, S, j, 0xF0)))
        res = {k: np.concatenate([o[k] for o in out])[:count] for k in ("images", "parsing", "landmarks")}
        res["attributes"] = params["attributes"][:count]
        return res

    # -- access ----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def _flipped(self, i: int) -> bool:
        return self.augment and bool(seeded_rng(self.aug_seed, self.epoch, i, 0xF1).random() < 0.5)

    def label_map(self, parsing: np.ndarray) -> np.ndarray:
        """CelebAMask-HQ labels -> this dataset's label set (identity for ``labels="full"``)."""
        return FULL_TO_MERGED[parsing] if self.labels == "merged" else parsing.astype(np.int64)

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i = i % self.n
        img, par, lm = self.images[i], self.parsing[i], self.landmarks[i]
        if self._flipped(i):
            img, par = img[:, ::-1], FLIP_LABELS[par[:, ::-1]]
            lm = lm[FLIP_LANDMARKS] * np.array([-1, 1], np.float32) + np.array([1, 0], np.float32)
        return {"image": to_item_image(img), "parsing": torch.from_numpy(self.label_map(par)),
                "attributes": torch.from_numpy(self.attributes[i].astype(np.float32)),
                "landmarks": torch.from_numpy(np.ascontiguousarray(lm, dtype=np.float32))}


# ------------------------------------------------------------------------------------------------ calibration
def face_statistics(parsing, attributes, labels=CELEBAMASK_LABELS, attribute_names=ATTRIBUTES) -> dict:
    """What the chapter shows about a face set: pixel frequencies, attribute base rates and correlations.

    ``parsing``: int ``(N, H, W)`` with label indices into ``labels``; ``attributes``: 0/1 ``(N, A)``.  Returns
    pandas objects: ``pixels`` (per label: share of all pixels, share of images where it appears),
    ``rates`` (P(attribute)), ``conditional`` (per attribute: P(a | Male), P(a | not Male), P(a | Young),
    P(a | not Young), where those attributes are present), ``correlation`` (phi coefficients, A x A).
    """
    import pandas as pd

    parsing = np.asarray(parsing)
    att = np.asarray(attributes, dtype=np.float64)
    K = len(labels)
    counts = np.bincount(parsing.reshape(-1).astype(np.int64), minlength=K)[:K]
    present = np.stack([(parsing == k).any(axis=(1, 2)) for k in range(K)], axis=1).mean(0)
    pixels = pd.DataFrame({"pixel_share": counts / max(1, parsing.size), "image_share": present},
                          index=list(labels))
    rates = pd.Series(att.mean(0), index=list(attribute_names), name="P(attribute)")
    cond = {}
    for given in ("Male", "Young"):
        if given in attribute_names:
            g = att[:, list(attribute_names).index(given)] > 0.5
            cond[f"P(a|{given})"] = att[g].mean(0) if g.any() else np.full(att.shape[1], np.nan)
            cond[f"P(a|not {given})"] = att[~g].mean(0) if (~g).any() else np.full(att.shape[1], np.nan)
    conditional = pd.DataFrame(cond, index=list(attribute_names))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(att, rowvar=False)
    correlation = pd.DataFrame(corr, index=list(attribute_names), columns=list(attribute_names))
    return {"pixels": pixels, "rates": rates, "conditional": conditional, "correlation": correlation}


def dataset_statistics(dataset, max_items: int | None = None) -> dict:
    """:func:`face_statistics` of a :class:`FaceWorld` (from its arrays, full labels) or of any dataset giving
    ``parsing`` and ``attributes`` items (e.g. :class:`~cdlib.papers.zhang2023.celebamask.CelebAMaskHQ`)."""
    n = len(dataset) if max_items is None else min(len(dataset), int(max_items))
    if isinstance(dataset, FaceWorld):
        return face_statistics(dataset.parsing[:n], dataset.attributes[:n])
    items = [dataset[i] for i in range(n)]
    return face_statistics(np.stack([it["parsing"].numpy() for it in items]),
                           np.stack([it["attributes"].numpy() for it in items]),
                           labels=getattr(dataset, "label_names", CELEBAMASK_LABELS),
                           attribute_names=getattr(dataset, "attribute_names", ATTRIBUTES))


# ------------------------------------------------------------------------------------------------ registry
def labels_for_config(cfg) -> str:
    opts = getattr(cfg, "model_options", None) or {}
    return opts.get("face_labels", "merged" if cfg.image_size <= 64 else "full")


@register_dataset("faceworld")
def build_faceworld(cfg, split: str) -> FaceWorld:
    """``cfg.num_train`` training faces, :data:`FACES_EVAL_N` val/test faces, at ``cfg.image_size``.

    Faces are always drawn with data seed 0 (every model sees the same faces); ``cfg.seed`` drives the flips of
    training items.  Labels: ``cfg.model_options["face_labels"]`` if set, else "merged" up to 64 px, "full" above.
    """
    n = cfg.num_train if split == "train" else FACES_EVAL_N
    return FaceWorld(split, n=n, image_size=cfg.image_size, seed=0, labels=labels_for_config(cfg),
                     augment=split == "train", aug_seed=cfg.seed)
