"""The checkpoint zoo: manifest, hash verification, load-or-train cache, build_zoo."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cdlib import registry, zoo
from cdlib.config import make_config
from cdlib.train import read_checkpoint, train

TOY = "toy_test_zoo"
pytestmark = pytest.mark.usefixtures("zoo_toy")


@pytest.fixture
def zoo_toy():
    """The zoo's toy compression model (tests/toys.py), registered for one test."""
    import toys

    toys.register_zoo_toy(TOY)
    yield TOY
    toys.unregister_toys([TOY])


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n, size, seed):
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(0)}


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty zoo and cache directories, and a stand-in for cdlib.data.build_dataset (counts its calls)."""
    zoo.specs()  # the paper packages load (and import cdlib.data) before it is replaced below
    monkeypatch.setenv("CDLIB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    calls = []
    fake = types.ModuleType("cdlib.data")

    def build_dataset(cfg, split):
        calls.append(split)
        return ToyData(cfg.num_train, cfg.image_size, cfg.seed)

    fake.build_dataset = build_dataset
    monkeypatch.setitem(sys.modules, "cdlib.data", fake)
    return types.SimpleNamespace(root=tmp_path, zoo=tmp_path / "zoo", cache=tmp_path / "cache", calls=calls)


def trained_ckpt(path: Path, **overrides) -> Path:
    cfg = make_config(TOY, "laptop", **overrides)
    torch.manual_seed(0)
    train(registry.create_model(TOY, "laptop"), cfg, out=path, progress=False)
    return path


def test_add_entry_verify_load_and_tamper(dirs):
    ckpt = trained_ckpt(dirs.root / "run.pt")
    entry = zoo.add_entry(ckpt, "toy-a", metrics={"psnr": 21.5}, cpu_minutes=0.01)
    manifest = json.loads((dirs.zoo / "manifest.json").read_text())
    assert manifest["entries"] == [entry]
    for key in ("id", "model", "profile", "config", "arch", "seed", "steps", "cpu_minutes", "metrics", "file",
                "sha256", "bytes", "created_by"):
        assert key in entry
    assert entry["model"] == TOY and entry["steps"] == 6 and entry["config"]["lr"] == 1e-2
    assert entry["created_by"].startswith(f"python -m cdlib train {TOY} --profile laptop")
    assert entry["bytes"] == (dirs.zoo / "toy-a.pt").stat().st_size
    assert not list(dirs.zoo.glob("*.tmp"))
    assert zoo.verify(entry) and zoo.verify("toy-a")
    assert zoo.path_of("toy-a") == dirs.zoo / "toy-a.pt"
    assert [e["id"] for e in zoo.entries(model=TOY)] == ["toy-a"]
    assert zoo.entries(model="hyperprior") == [] and len(zoo.entries(lmbda=0.01)) == 1
    with pytest.raises(ValueError, match="unknown zoo filter"):
        zoo.entries(lmbd=0.01)

    model = zoo.load("toy-a")
    assert model.checkpoint_meta["zoo_id"] == "toy-a" and len(model.fingerprint) == 16
    assert torch.allclose(model.enc.weight, read_checkpoint(ckpt)["state_dict"]["enc.weight"])

    # replacing an entry keeps one entry per id
    zoo.add_entry(ckpt, "toy-a", metrics={"psnr": 22.0}, cpu_minutes=0.01, fp16=False)
    assert [e["metrics"] for e in zoo.load_manifest()["entries"]] == [{"psnr": 22.0}]

    with open(dirs.zoo / "toy-a.pt", "ab") as f:
        f.write(b"x")
    assert not zoo.verify("toy-a")
    with pytest.raises(ValueError, match="does not match the manifest"):
        zoo.load("toy-a")
    (dirs.zoo / "toy-a.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        zoo.load("toy-a")
    with pytest.raises(ValueError, match="unknown zoo entry 'nope'; entries in .*: toy-a"):
        zoo.load("nope")


def test_load_or_train_trains_then_hits_the_cache(dirs):
    m1, info1 = zoo.load_or_train(TOY, budget_steps=4, progress=False, lmbda=0.02)
    assert info1["source"] == "trained" and info1["steps"] == 4 and dirs.calls == ["train"]
    assert Path(info1["path"]).parent == dirs.cache / "ckpt" and Path(info1["path"]).is_file()  # paths.cache_dir("ckpt")
    m2, info2 = zoo.load_or_train(TOY, budget_steps=4, progress=False, lmbda=0.02)
    assert info2["source"] == "cache" and dirs.calls == ["train"]  # no training the second time
    assert info2["path"] == info1["path"] and m1.fingerprint == m2.fingerprint
    # another config is another cache entry
    _, info3 = zoo.load_or_train(TOY, budget_steps=4, progress=False, lmbda=0.03)
    assert info3["source"] == "trained" and info3["path"] != info1["path"]


def test_load_or_train_prefers_the_zoo(dirs):
    zoo.add_entry(trained_ckpt(dirs.root / "full.pt", lmbda=0.05), "toy-full", metrics={}, cpu_minutes=0.0)
    model, info = zoo.load_or_train(TOY, budget_steps=2, progress=False, lmbda=0.05, num_workers=1)
    assert info["source"] == "zoo" and info["entry_id"] == "toy-full" and dirs.calls == ["train"]
    assert model.checkpoint_meta["zoo_id"] == "toy-full"
    _, info = zoo.load_or_train(TOY, entry_id="toy-full", progress=False)
    assert info["source"] == "zoo"
    with pytest.raises(ValueError, match="not 'hyperprior'"):
        zoo.load_or_train("hyperprior", entry_id="toy-full")


def test_build_zoo_from_specs(dirs, monkeypatch):
    zoo.specs()  # the papers' recipes register now, before the list is swapped for an empty one
    monkeypatch.setattr(zoo, "ZOO_SPECS", [])
    monkeypatch.setitem(zoo.METRIC_FNS, "toy_eval",
                        lambda model, cfg: {"n_params": sum(p.numel() for p in model.parameters())})
    zoo.register_spec("toy-b", TOY, "laptop", {"lmbda": 0.1, "steps": 3}, "toy_eval")
    zoo.register_spec("toy-c", TOY, "laptop", {"steps": 3, "arch": {"N": 2}}, None)
    with pytest.raises(ValueError, match=r"unknown zoo spec\(s\) \['toy-x'\]; specs: toy-b, toy-c"):
        zoo.build_zoo(["toy-x"])
    added = zoo.build_zoo(workdir=dirs.root / "build", progress=False)
    assert [e["id"] for e in added] == ["toy-b", "toy-c"]
    by_id = {e["id"]: e for e in zoo.load_manifest()["entries"]}
    assert by_id["toy-b"]["metrics"]["n_params"] > 0 and by_id["toy-b"]["config"]["lmbda"] == 0.1
    assert set(by_id["toy-c"]["metrics"]) >= {"loss", "mse", "bpp"} and by_id["toy-c"]["arch"] == {"N": 2}
    assert "--arch N=2" in by_id["toy-c"]["created_by"]
    assert all(zoo.verify(e) for e in by_id.values())


def test_weightless_recipes_keep_their_record_not_their_weights(dirs, monkeypatch):
    zoo.specs()
    monkeypatch.setattr(zoo, "ZOO_SPECS", [])
    seen = []

    def toy_eval(model, cfg):  # measured on the served (fp16-exported) weights, as a shipped entry
        seen.append(next(model.parameters()).dtype)
        return {"seed_metric": float(cfg.seed)}

    monkeypatch.setitem(zoo.METRIC_FNS, "toy_eval", toy_eval)
    zoo.register_spec("toy-s0", TOY, "laptop", {"steps": 3, "seed": 0}, "toy_eval")
    zoo.register_spec("toy-s1", TOY, "laptop", {"steps": 3, "seed": 1}, "toy_eval", ship=False)
    with pytest.raises(ValueError, match="no file to share a base"):
        zoo.register_spec("toy-bad", TOY, "laptop", {"steps": 3}, None, base="toy-s0", ship=False)
    added = zoo.build_zoo(workdir=dirs.root / "build", progress=False)
    assert [e["id"] for e in added] == ["toy-s0", "toy-s1"] and seen == [torch.float32] * 2
    assert [e["id"] for e in zoo.entries()] == ["toy-s0"]  # entries serve weights only
    (rec,) = zoo.results(model=TOY, seed=1)
    assert rec["id"] == "toy-s1" and rec["metrics"] == {"seed_metric": 1.0} and rec["steps"] == 3
    assert rec["cpu_minutes"] >= 0 and "file" not in rec and "sha256" not in rec
    assert zoo.results(seed=0) == [] and not (dirs.zoo / "toy-s1.pt").exists()
    with pytest.raises(ValueError, match="unknown zoo entry 'toy-s1'"):
        zoo.load("toy-s1")
    # load_or_train never takes a record for weights: the same config trains (and caches) instead
    _, info = zoo.load_or_train(TOY, "laptop", progress=False, steps=3, seed=1)
    assert info["source"] == "trained"
    # shipping it later replaces the record; a record cannot replace a shipped entry
    zoo.add_entry(dirs.root / "build" / "toy-s1.pt", "toy-s1", metrics={}, cpu_minutes=0.0)
    assert zoo.results() == [] and {e["id"] for e in zoo.entries()} == {"toy-s0", "toy-s1"}
    with pytest.raises(ValueError, match="zoo entry with weights"):
        zoo.add_result(dirs.root / "build" / "toy-s1.pt", "toy-s1", {}, 0.0)


def test_build_zoo_records_quality_against_steps_and_keeps_it_across_a_resume(dirs, monkeypatch):
    zoo.specs()
    monkeypatch.setattr(zoo, "ZOO_SPECS", [])
    seen = []

    def toy_eval(model, cfg):
        seen.append(model.training)
        return {"w": float(sum(p.detach().abs().sum() for p in model.parameters()))}

    monkeypatch.setitem(zoo.METRIC_FNS, "toy_eval", toy_eval)
    zoo.register_spec("toy-e", TOY, "laptop", {"steps": 6, "ckpt_every": 2}, "toy_eval", eval_every=2)
    build = dirs.root / "build"
    added = zoo.build_zoo(workdir=build, progress=False)
    evals = added[0]["evals"]
    assert [e["step"] for e in evals] == [2, 4, 6] and len({e["w"] for e in evals}) == 3
    assert zoo.get_entry("toy-e")["evals"] == evals and seen[:3] == [False] * 3
    # measuring does not change training: the same weights as a run without measurements
    plain = trained_ckpt(dirs.root / "plain.pt", steps=6, ckpt_every=2)
    got, want = read_checkpoint(build / "toy-e.pt")["state_dict"], read_checkpoint(plain)["state_dict"]
    assert got.keys() == want.keys() and all(torch.equal(v, want[k]) for k, v in got.items())
    # a resumed build keeps the measurements already made and does not repeat them
    seen.clear()
    zoo.build_zoo(workdir=build, progress=False)
    assert zoo.get_entry("toy-e")["evals"] == evals and len(seen) == 1  # only the final metrics


def test_recipe_on_another_profile_keeps_its_identity_not_its_laptop_settings(monkeypatch):
    from cdlib import recipes, zoo as zoo_mod

    calls = []

    def fake(model_name, profile, budget_steps=None, arch=None, progress=False, **cfg):
        calls.append((model_name, profile, arch, cfg))
        return None, {"path": f"/ckpt/{len(calls)}.pt"}

    monkeypatch.setattr(zoo_mod, "load_or_train", fake)
    recipes.load_recipe("bai2022_q2_last", "paper", data_path="/data/imagenet")
    (_, p1, _, c1), (_, p2, a2, c2) = calls
    # step 1 first, as the paper's step 1 (AMP, DeiT augmentation), without the laptop's settings
    assert p1 == p2 == "paper" and c1["stage"] == "step1" and c1["amp"] is True and c1["augment"] == "deit"
    assert "steps" not in c1 and "steps" not in c2 and c2["data_path"] == "/data/imagenet"
    assert c2["init_from"] == "/ckpt/1.pt" and c2["lmbda"] == 0.003 and a2 == {"agg_blocks": "last"}
    calls.clear()
    # the laptop recipe as the zoo trained it (the zoo not consulted: as on a checkout without it)
    monkeypatch.setattr(zoo_mod, "shipped_recipe_entry", lambda *a, **k: None)
    recipes.load_recipe("bai2022_step1")
    from cdlib.papers.bai2022.recipes import BAI_STEP1_MORE_STEPS, BAI_STEP1_STEPS

    (_, _, _, base), (_, _, _, more) = calls  # the first cycle, then the second from it
    assert base["steps"] == BAI_STEP1_STEPS and more["steps"] == BAI_STEP1_MORE_STEPS
    assert more["init_from"] == "/ckpt/1.pt" and more["num_train"] == 2 * base["num_train"]
    assert all(c["augment"] == "" and c["amp"] is False for c in (base, more))


def test_a_shipped_recipe_loads_without_its_base(dirs, monkeypatch):
    """load_recipe takes a shipped entry as it is: its init_from chain (here a weightless record) is not
    loaded, let alone trained; without the entry the chain is built first."""
    from cdlib import recipes

    zoo.specs()
    monkeypatch.setattr(zoo, "ZOO_SPECS", [])
    zoo.register_spec("toy-base", TOY, "laptop", {"steps": 3}, None, ship=False)
    zoo.register_spec("toy-child", TOY, "laptop", {"steps": 2, "lmbda": 0.05, "init_from": "@toy-base"}, None)
    zoo.build_zoo(workdir=dirs.root / "build", progress=False)
    assert [r["id"] for r in zoo.results()] == ["toy-base"]
    trained = []
    real = zoo.load_or_train
    monkeypatch.setattr(zoo, "load_or_train", lambda *a, **k: trained.append(k) or real(*a, **k))
    _, info = recipes.load_recipe("toy-child")
    assert info["source"] == "zoo" and info["entry_id"] == "toy-child" and len(trained) == 1
    (dirs.zoo / "toy-child.pt").unlink()
    manifest = zoo.load_manifest()
    manifest["entries"] = []
    zoo._write_manifest(manifest)
    trained.clear()
    _, info = recipes.load_recipe("toy-child")  # not shipped: the base first, then the child from it
    assert info["source"] == "trained" and [k["steps"] for k in trained] == [3, 2]


def test_an_entry_trained_from_a_base_stores_only_what_differs(dirs):
    """Rate points fine-tuned from one base with parts frozen: the file holds the other parts only, loads
    complete through the zoo, refuses to load without its base, and fails when the base is tampered with."""
    from cdlib.checkpoint import atomic_save, load_model

    base_ckpt = trained_ckpt(dirs.root / "base.pt")
    ck = read_checkpoint(base_ckpt)
    changed = sorted(ck["state_dict"])[0]
    ck["state_dict"] = {k: (v + 1 if k == changed else v) for k, v in ck["state_dict"].items()}
    child_ckpt = atomic_save(ck, dirs.root / "child.pt")

    zoo.add_entry(base_ckpt, "toy-base", metrics={}, cpu_minutes=0.01)
    entry = zoo.add_entry(child_ckpt, "toy-child", metrics={}, cpu_minutes=0.01, base="toy-base")
    assert entry["base"] == "toy-base"
    stored = read_checkpoint(dirs.zoo / "toy-child.pt")
    assert list(stored["state_dict"]) == [changed]
    assert set(stored["exported"]["base_keys"]) == set(ck["state_dict"]) - {changed}
    assert entry["bytes"] < zoo.get_entry("toy-base")["bytes"]

    model = zoo.load("toy-child")
    zoo.add_entry(child_ckpt, "toy-whole", metrics={}, cpu_minutes=0.01)  # the same weights, stored whole
    full = zoo.load("toy-whole")
    assert model.fingerprint == full.fingerprint
    for k, v in full.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.fingerprint == load_model(zoo.materialize("toy-child")).fingerprint
    with pytest.raises(ValueError, match="stores only the weights that differ from zoo entry 'toy-base'"):
        load_model(dirs.zoo / "toy-child.pt")

    assert "base" not in zoo.get_entry("toy-whole")

    with open(dirs.zoo / "toy-base.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="does not match the manifest"):
        zoo.load("toy-child")


def test_recipes_that_differ_only_in_init_from_load_their_own_entry(dirs):
    """Two zoo entries with the same config but for init_from (e.g. analysis networks of two rate points):
    the caller's recipe id decides which one loads, not the manifest's order."""
    ckpt = trained_ckpt(dirs.root / "run.pt")
    zoo.add_entry(ckpt, "toy-a", metrics={"n": 1.0}, cpu_minutes=0.01)
    zoo.add_entry(ckpt, "toy-b", metrics={"n": 2.0}, cpu_minutes=0.01)
    _, info = zoo.load_or_train(TOY, "laptop", progress=False, prefer="toy-b")
    assert info["entry_id"] == "toy-b"
    _, info = zoo.load_or_train(TOY, "laptop", progress=False)
    assert info["entry_id"] == "toy-a"


def test_config_from_dict_rebuilds_a_stored_config(dirs):
    from cdlib.config import config_from_dict

    cfg = make_config(TOY, "laptop", lmbda=0.05, steps=3)
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    stored = {k: v for k, v in cfg.to_dict().items() if k != "label_smoothing"}  # a field added later
    assert config_from_dict(stored) == cfg
    with pytest.raises(ValueError):
        config_from_dict({**cfg.to_dict(), "steps": 0})
