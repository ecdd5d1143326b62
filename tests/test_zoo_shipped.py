"""The shipped checkpoint zoo: every file matches its manifest entry, and reloaded checkpoints reproduce
the metrics the manifest records (measured again here with the same code and real bitstreams)."""
import json

import pytest

from cdlib import zoo

ENTRIES = zoo.load_manifest()["entries"] if zoo.manifest_path().is_file() else []
pytestmark = pytest.mark.skipif(not ENTRIES, reason="no zoo shipped in this checkout")


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_file_matches_manifest(entry):
    path = zoo.zoo_dir() / entry["file"]
    assert path.is_file(), f"{path} missing"
    assert zoo.sha256_of(path) == entry["sha256"]
    assert path.stat().st_size == entry["bytes"]
    assert entry["metrics"], "every entry records what it reached"
    assert entry["created_by"].startswith("python -m cdlib train")


# The zoo's size budget in MiB (2^20 bytes, what the README reports): 64 in all; Part I and Paper A 28, Paper B 16,
# Paper C 20.
BUDGETS_MB = {"zhang2023": 16, "tang2025": 20}
PART_I_AND_A_MB, TOTAL_MB = 28, 64


def _share(entry) -> str:
    return next((p for p in BUDGETS_MB if entry["model"].startswith(p)), "part I and A")


def test_zoo_is_small():
    total = sum((zoo.zoo_dir() / e["file"]).stat().st_size for e in ENTRIES)
    assert total <= TOTAL_MB * 2**20, f"zoo is {total / 2**20:.1f} MiB"
    shares: dict = {}
    for e in ENTRIES:
        shares[_share(e)] = shares.get(_share(e), 0) + e["bytes"]
    for name, size in shares.items():
        limit = BUDGETS_MB.get(name, PART_I_AND_A_MB)
        assert size <= limit * 2**20, f"{name}: {size / 2**20:.1f} MiB of the zoo, over its {limit} MiB"


def test_every_recipe_is_shipped():
    """Each recipe has its entry (weights), or its record when registered with ship=False."""
    shipped, recorded = {e["id"] for e in ENTRIES}, {r["id"] for r in zoo.results()}
    missing = [s["id"] for s in zoo.specs() if s["id"] not in (shipped if s["ship"] else recorded)]
    assert not missing, f"recipes without a zoo entry or record (run `make checkpoints`): {missing}"


@pytest.mark.parametrize("kind", ["entries", "results"])
def test_entries_and_records_are_their_recipes(kind):
    """What a recipe would train today is what its entry (or record) was trained with, as load_or_train matches
    them: a recipe edited after its training would make chapters train instead of loading."""
    from cdlib.registry import upgrade_arch

    stored = {e["id"]: e for e in (ENTRIES if kind == "entries" else zoo.results())}
    differ = []
    for spec in zoo.specs():
        if spec["id"] not in stored:
            continue
        e = stored[spec["id"]]
        cfg, arch = zoo._spec_config(spec)
        if (zoo._matchable(cfg.to_dict()), zoo._json(arch)) != (
                zoo._matchable(e["config"]), zoo._json(upgrade_arch(e["model"], e["arch"]))):
            differ.append(spec["id"])
    assert not differ, f"recipes whose config or arch differ from what their zoo {kind} were trained with: {differ}"


def test_records_say_what_they_reached():
    for r in zoo.results():
        assert r["metrics"] and r["cpu_minutes"] > 0 and "file" not in r, r["id"]
        assert r["created_by"].startswith("python -m cdlib train"), r["id"]


# One entry per metric function (the others use the same code); bai2022 on its highest rate point; zhang2023's
# lowest rate point and its analysis network (both stored as differences from another entry).
REMEASURED = ["hyperprior_q2", "pixel_classifier", "bai2022_q4", "zhang2023_q1", "zhang2023_analysis_q1",
              "zhang2023_pixel"]


def _tolerance(metric: str) -> dict:
    """How far a re-measured metric may be from the stored one: byte counts are exact; an accuracy (a ratio
    of correct predictions or confusion-matrix cells) may move by a near-tie prediction or two; float sums
    (likelihood estimates, landmark errors, MS-SSIM) move in the last float32 digits with the CPU's vector
    width and thread count, the PSNR of a decode more."""
    if metric.startswith("bpp") and "likelihood" not in metric:
        return dict(rel=1e-9, abs=1e-12)
    if metric in {"miou", "pixel_accuracy"} or metric.endswith(("acc", "accuracy")):
        return dict(rel=1e-9, abs=2e-3)
    return dict(rel=1e-4 if metric.startswith("psnr") else 1e-5, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("entry_id", REMEASURED)
def test_metrics_reproduce(entry_id):
    entry = zoo.get_entry(entry_id)
    spec = next(s for s in zoo.specs() if s["id"] == entry_id)
    cfg, _ = zoo._spec_config(spec)
    got = zoo.METRIC_FNS[spec["eval_fn"]](zoo.load(entry_id), cfg)
    for k, v in entry["metrics"].items():
        assert got[k] == pytest.approx(v, **_tolerance(k)), (k, got[k], v, json.dumps(entry["metrics"]))
