"""The training loop: determinism, resume, NaN handling, DDP, checkpoints, config errors, model hooks
(optimisers, custom steps, frozen stages, data), model options.  The toy models are in tests/toys.py."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from toys import GAN, MOCO, TOY, ToyData

from cdlib import registry
from cdlib.checkpoint import (CKPT_FORMAT, export_checkpoint, fingerprint, load_model, read_checkpoint)
from cdlib.config import TrainConfig, make_config, parse_value, upgrade_config_dict, validate
from cdlib.registry import Option
from cdlib.train import (collate, default_optimizers, epoch_batches, lr_factor, make_optimizer, mix_seed,
                         seed_everything, train, weight_decay_groups)

pytestmark = pytest.mark.usefixtures("toy_models")

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

BASE = dict(steps=10, batch_size=4, image_size=16, lr=1e-2, aux_lr=1e-2, warmup_steps=2, log_every=2,
            ckpt_every=5, num_train=24, dataset="shapes", device="cpu")


def cfg_of(model=TOY, **kw):
    return make_config(model, "laptop", **{**BASE, **kw})


def fresh_model(seed=0, model=TOY):
    torch.manual_seed(seed)
    return registry.create_model(model, "laptop")


def run(tmp, name="ckpt.pt", seed=0, model=None, data=None, arch=TOY, **kw):
    cfg = cfg_of(arch, seed=seed, **{k: v for k, v in kw.items() if k not in ("callback", "resume")})
    model = model or fresh_model(seed, arch)
    res = train(model, cfg, out=None if tmp is None else Path(tmp) / name, dataset=data or ToyData(),
                progress=False, callback=kw.get("callback"), resume=kw.get("resume", True))
    return model, res


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def same_tree(a, b) -> bool:
    """Exact equality of nested dicts/lists of tensors and numbers (optimizer and scheduler states)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def stop_at(n):
    def callback(step, record):
        if step == n:
            raise KeyboardInterrupt

    return callback


def kill_and_resume(tmp_path, arch, **kw):
    """(full model, full result, resumed model, resumed result): a run killed at step 6 (after the step-5
    checkpoint) and resumed with a differently initialised model, next to an uninterrupted run."""
    full, rfull = run(tmp_path, "full.pt", arch=arch, **kw)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut.pt", arch=arch, callback=stop_at(6), **kw)
    assert read_checkpoint(tmp_path / "cut.pt")["step"] == 5
    resumed, rres = run(tmp_path, "cut.pt", arch=arch, model=fresh_model(123, arch), **kw)
    assert rres["resumed_from"] == 5
    return full, rfull, resumed, rres


def assert_same_training_state(path_a, path_b):
    a, b = read_checkpoint(path_a), read_checkpoint(path_b)
    assert a["step"] == b["step"]
    for key in ("state_dict", "optimizers", "schedulers", "history", "metrics"):
        assert same_tree(a[key], b[key]), key


# ----------------------------------------------------------------------------------------------------------
# The default hooks: today's loop
# ----------------------------------------------------------------------------------------------------------
def reference_run(cfg, data, seed=0):
    """The training loop of a plain model written out by hand: Adam on everything but the quantiles, warm-up +
    cosine, clip, then an Adam step of the aux loss; data order and per-step seeds as documented."""
    model = fresh_model(seed)
    model.train()
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt = torch.optim.Adam(main, lr=cfg.lr, weight_decay=cfg.weight_decay)
    aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    weights = model.loss_weights(cfg)
    per_epoch = len(epoch_batches(len(data), cfg.batch_size, cfg.seed, 0))
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for step in range(cfg.steps):
            epoch, pos = divmod(step, per_epoch)
            idx = epoch_batches(len(data), cfg.batch_size, cfg.seed, epoch)[pos]
            seed_everything(mix_seed(cfg.seed, 0, step))
            terms = model.loss_terms(collate([data[i] for i in idx]), cfg)
            loss = sum(weights[k] * terms[k] for k in weights)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(main, cfg.grad_clip)
            opt.step()
            sched.step()
            aux_opt.zero_grad()
            model.aux_loss().backward()
            aux_opt.step()
    finally:
        torch.use_deterministic_algorithms(det, warn_only=True)
    return model


def test_default_hooks_are_the_plain_loop():
    model, _ = run(None)
    assert same_weights(model, reference_run(cfg_of(), ToyData()))


def test_same_seed_same_numbers_and_different_seed_differs(tmp_path):
    m1, r1 = run(tmp_path, "a.pt", seed=0)
    m2, r2 = run(None, seed=0)
    m3, r3 = run(None, seed=1)
    assert same_weights(m1, m2)
    assert r1["metrics"] == r2["metrics"] and r1["history"] == r2["history"]
    assert r1["fingerprint"] == r2["fingerprint"]
    assert not same_weights(m1, m3) and r1["metrics"] != r3["metrics"]
    # every term is logged, plus the weighted loss, the aux loss and the lr
    assert set(r1["history"][0]) == {"step", "lr", "loss", "mse", "bpp", "ce", "aux_loss"}
    assert [h["step"] for h in r1["history"]] == [2, 4, 6, 8, 10]
    # the aux optimiser moved the quantiles
    assert not torch.equal(m1.entropy_bottleneck.quantiles, fresh_model(0).entropy_bottleneck.quantiles)


def test_interrupt_then_resume_is_exact(tmp_path):
    full, rfull = run(tmp_path, "full.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut.pt", callback=stop_at(6))
    assert read_checkpoint(tmp_path / "cut.pt")["step"] == 5
    data = ToyData()
    resumed, rres = run(tmp_path, "cut.pt", model=fresh_model(123), data=data)
    assert rres["resumed_from"] == 5
    assert data.epochs == [0, 1]  # 24 images / batch 4 = 6 steps per epoch: step 5 is in epoch 0
    assert same_weights(full, resumed)
    assert rres["history"] == rfull["history"] and rres["metrics"] == rfull["metrics"]
    assert_same_training_state(tmp_path / "full.pt", tmp_path / "cut.pt")
    # a finished checkpoint resumes to a no-op
    again, rag = run(tmp_path, "cut.pt", model=fresh_model(7))
    assert rag["resumed_from"] == 10 and same_weights(full, again)


def test_sigkill_then_resume_is_exact(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        torch.set_num_threads(1)
        import toys
        from cdlib import registry
        from cdlib.config import make_config
        from cdlib.train import train
        toys.register_toys()
        cfg = make_config(toys.TOY, "laptop", **{BASE!r})
        torch.manual_seed(0)
        model = registry.create_model(toys.TOY, "laptop")

        def die(step, record):
            if step == 7:
                os.kill(os.getpid(), signal.SIGKILL)

        train(model, cfg, out={str(tmp_path / "k.pt")!r}, dataset=toys.ToyData(), progress=False, callback=die)
    '''))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert read_checkpoint(tmp_path / "k.pt")["step"] == 5
    assert not list(tmp_path.glob("*.tmp"))
    full, _ = run(None)
    resumed, _ = run(tmp_path, "k.pt", model=fresh_model(1))
    assert same_weights(full, resumed)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    model = fresh_model()

    def poison(step, record):
        if step == 5:
            model.poison = True

    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 6: terms .*'mse': nan"):
        run(tmp_path, "nan.pt", model=model, callback=poison)
    ckpt = read_checkpoint(tmp_path / "nan.pt")
    assert ckpt["step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_with_other_config_is_refused(tmp_path):
    run(tmp_path, "c.pt", steps=5)
    with pytest.raises(ValueError, match=r"different training config \(lr: 0.01 -> 0.02.*resume=False"):
        run(tmp_path, "c.pt", steps=5, lr=2e-2)
    with pytest.raises(ValueError, match=r"different training config \(model_options: .*'noise': 0.0.*"
                                         r"-> .*'noise': 0.25"):
        run(tmp_path, "c.pt", steps=5, noise=0.25)
    _, res = run(tmp_path, "c.pt", steps=5, lr=2e-2, resume=False)  # overwrites
    assert res["resumed_from"] == 0 and read_checkpoint(tmp_path / "c.pt")["config"]["lr"] == 2e-2
    # num_workers does not change the numbers: resuming with another value is fine
    _, res = run(tmp_path, "c.pt", steps=5, lr=2e-2, num_workers=1)
    assert res["resumed_from"] == 5


def test_a_run_killed_before_its_first_periodic_checkpoint_resumes_exactly(tmp_path):
    """ckpt_every=200 (the default) and a kill at step 12: the early checkpoint of step 10 is kept."""
    from cdlib.train import FIRST_CHECKPOINT_STEP

    assert FIRST_CHECKPOINT_STEP == 10
    full, rfull = run(tmp_path, "full.pt", steps=14, ckpt_every=200)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut.pt", steps=14, ckpt_every=200, callback=stop_at(12))
    assert read_checkpoint(tmp_path / "cut.pt")["step"] == 10
    resumed, rres = run(tmp_path, "cut.pt", steps=14, ckpt_every=200, model=fresh_model(9))
    assert rres["resumed_from"] == 10 and same_weights(full, resumed) and rres["history"] == rfull["history"]
    assert_same_training_state(tmp_path / "full.pt", tmp_path / "cut.pt")


def test_unwritable_output_is_found_before_the_first_step(tmp_path):
    steps = []
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OSError, match=r"cannot create the folder .*afile of checkpoint .*c\.pt"):
        run(tmp_path, "afile/c.pt", callback=lambda step, rec: steps.append(step))
    with pytest.raises(ValueError, match=r"is a directory: give a file path"):
        run(tmp_path, "", callback=lambda step, rec: steps.append(step))
    assert steps == []
    # a folder that does not exist yet is created
    run(tmp_path, "new/sub/c.pt", steps=2)
    assert read_checkpoint(tmp_path / "new" / "sub" / "c.pt")["step"] == 2
    assert not list((tmp_path / "new" / "sub").glob(".*"))  # the write probe is gone


@pytest.mark.parametrize("failure", ["torch", "oserror"])
def test_full_disk_while_saving_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, failure):
    import cdlib.checkpoint as ck

    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(obj["step"])
        if len(calls) < 2:
            return real_save(obj, f, *a, **k)
        f.write(b"PK\x03\x04 partial")
        if failure == "torch":  # what torch's zip writer raises when the disk is full
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1728 vs 1626")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", save)
    why = r"write failed with [0-9.]+ MiB free on the disk \(full\?\)" if failure == "torch" else \
        "No space left on device"
    with pytest.raises(OSError, match=rf"^cannot save checkpoint .*c\.pt at step 10: {why}; the previous "
                                      r"checkpoint, if any, is kept$") as info:
        run(tmp_path, "c.pt")
    assert "\n" not in str(info.value) and calls == [5, 10]
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "c.pt")["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def _as_legacy(path, **config_changes):
    """Rewrite a training checkpoint as cdlib wrote it before named optimisers and model options."""
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer"], ckpt["aux_optimizer"] = ckpt["optimizers"]["main"], ckpt["optimizers"]["aux"]
    ckpt["scheduler"] = ckpt["schedulers"]["main"]
    del ckpt["optimizers"], ckpt["schedulers"]
    for key in ("model_options", "momentum", "nesterov"):
        del ckpt["config"][key]
    ckpt["config"].update({"augment": "", **config_changes})
    torch.save(ckpt, path)


def test_checkpoints_of_older_versions_resume_exactly_or_say_why(tmp_path):
    full, _ = run(tmp_path, "full.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "old.pt", callback=stop_at(6))
    _as_legacy(tmp_path / "old.pt")
    resumed, res = run(tmp_path, "old.pt", model=fresh_model(3))
    assert res["resumed_from"] == 5 and same_weights(full, resumed)
    # an old top-level value of a key that is now a model option moves into model_options
    old = {**cfg_of().to_dict(), "mix": "swap"}
    del old["model_options"]
    assert upgrade_config_dict(old)["model_options"] == {"noise": 0.0, "mix": "swap"}
    # a retired field that held something other than its old default cannot be matched: refused, with why
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "aug.pt", callback=stop_at(6))
    _as_legacy(tmp_path / "aug.pt", augment="timm")
    with pytest.raises(ValueError, match=r"augment: 'timm' -> '<unset>' \(no longer a config field\)"):
        run(tmp_path, "aug.pt")


def test_checkpoint_format_atomic_and_load_model_round_trip(tmp_path):
    model, res = run(tmp_path, "rt.pt", steps=5)
    assert not list(tmp_path.glob("*.tmp"))
    ckpt = read_checkpoint(tmp_path / "rt.pt")
    for key in ("format", "model", "profile", "arch", "config", "step", "state_dict", "optimizers",
                "schedulers", "scaler", "rng", "history", "metrics", "fingerprint"):
        assert key in ckpt
    assert set(ckpt["optimizers"]) == {"main", "aux"} and set(ckpt["schedulers"]) == {"main"}
    assert ckpt["format"] == CKPT_FORMAT and ckpt["model"] == TOY and ckpt["arch"] == {"N": 4}
    assert ckpt["fingerprint"] == res["fingerprint"]
    loaded = load_model(tmp_path / "rt.pt")
    for k, v in model.state_dict().items():
        if not k.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.entropy_bottleneck._quantized_cdf.numel() > 0  # update(force=True) ran
    assert loaded.fingerprint == fingerprint(loaded) != res["fingerprint"]  # the CDF tables are now filled
    assert loaded.checkpoint_meta["step"] == 5 and loaded.checkpoint_meta["config"]["lr"] == 1e-2
    # init_from: another run starts from these weights (strict=False, reported)
    cfg = cfg_of(steps=1, init_from=str(tmp_path / "rt.pt"), lr=1e-9, aux_lr=1e-9, grad_clip=0.0)
    m2 = fresh_model(5)
    r2 = train(m2, cfg, dataset=ToyData(), progress=False)
    assert r2["init_from"]["missing"] == [] and r2["init_from"]["unexpected"] == []
    assert torch.allclose(m2.enc.weight, model.enc.weight, atol=1e-6)


def test_train_module_still_exports_the_moved_names():
    import cdlib.checkpoint as ck
    import cdlib.train as tr

    for name in ("CKPT_FORMAT", "RESUME_IGNORED", "atomic_save", "read_checkpoint", "load_model", "fingerprint",
                 "export_checkpoint", "load_state_dict"):
        assert getattr(tr, name) is getattr(ck, name), name


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a cdlib checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a cdlib checkpoint.*cdlib-ckpt-1"):
        load_model(tmp_path / "other.pt")
    run(tmp_path, "u.pt", steps=1)
    ckpt = torch.load(tmp_path / "u.pt", weights_only=True)
    ckpt["model"] = "no_such_model"
    torch.save(ckpt, tmp_path / "u.pt")
    with pytest.raises(ValueError, match="unknown model 'no_such_model'; available models"):
        load_model(tmp_path / "u.pt")


def test_export_fp16_keeps_entropy_state_exact(tmp_path):
    run(tmp_path, "e.pt", steps=2)
    src = read_checkpoint(tmp_path / "e.pt")
    export_checkpoint(tmp_path / "e.pt", tmp_path / "x.pt", fp16=True)
    dst = read_checkpoint(tmp_path / "x.pt")
    assert "optimizers" not in dst and "rng" not in dst
    assert dst["state_dict"]["dec.weight"].dtype == torch.float16  # 300 elements: cast
    assert dst["state_dict"]["enc.bias"].dtype == torch.float32    # small: kept
    for k, v in src["state_dict"].items():
        if "entropy_bottleneck" in k:
            assert torch.equal(dst["state_dict"][k], v), k
    m = load_model(tmp_path / "x.pt")
    assert m.dec.weight.dtype == torch.float32
    assert torch.allclose(m.dec.weight, src["state_dict"]["dec.weight"], atol=1e-3)
    assert (tmp_path / "x.pt").stat().st_size < (tmp_path / "e.pt").stat().st_size


def test_export_leaves_out_the_range_coder_tables(tmp_path):
    run(tmp_path, "e.pt", steps=2)
    ckpt = read_checkpoint(tmp_path / "e.pt")
    m = load_model(tmp_path / "e.pt")  # update(force=True) on load: the tables are filled
    ckpt["state_dict"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
    key = "entropy_bottleneck._quantized_cdf"
    assert ckpt["state_dict"][key].numel() > 0
    torch.save(ckpt, tmp_path / "u.pt")
    export_checkpoint(tmp_path / "u.pt", tmp_path / "x.pt")
    assert read_checkpoint(tmp_path / "x.pt")["state_dict"][key].numel() == 0
    assert torch.equal(load_model(tmp_path / "x.pt").entropy_bottleneck._quantized_cdf,
                       m.entropy_bottleneck._quantized_cdf)


def test_loss_weight_naming_a_missing_term_is_an_error():
    with pytest.raises(ValueError, match=r"loss weight\(s\) \['typo'\] name no loss term.*\['bpp', 'ce', 'mse'\]"):
        run(None, steps=1, loss_weights={"typo": 1.0})
    _, res = run(None, steps=2, loss_weights={"ce": 0.0})  # overriding a default weight is fine
    assert res["step"] == 2


def test_schedule_and_data_order():
    cfg = cfg_of(steps=10, warmup_steps=2)
    assert [round(lr_factor(s, cfg), 4) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(9, cfg) < 0.05
    assert lr_factor(5, cfg_of(schedule="constant")) == 1.0
    a, b = epoch_batches(10, 4, 0, 0), epoch_batches(10, 4, 0, 1)
    assert len(a) == 2 and a == epoch_batches(10, 4, 0, 0) and a != b
    assert len(epoch_batches(3, 8, 0, 0)) == 1  # a dataset smaller than a batch is repeated


# ----------------------------------------------------------------------------------------------------------
# Config and model options
# ----------------------------------------------------------------------------------------------------------
def test_config_errors_list_valid_choices():
    with pytest.raises(ValueError, match="unknown profile 'huge'; valid profiles: laptop, paper"):
        make_config(TOY, "huge")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['stpes'\]; valid keys: model, profile, steps.*"
                                         r"options of model 'toy_test_train': mix, noise"):
        make_config(TOY, "laptop", stpes=3)
    with pytest.raises(ValueError, match="bad value 'rmsprop' for 'optimizer'; valid values: adam, adamw, sgd"):
        make_config(TOY, "laptop", optimizer="rmsprop")
    with pytest.raises(ValueError, match="bad value 0 for 'steps': must be > 0"):
        make_config(TOY, "laptop", steps=0)
    with pytest.raises(ValueError, match="bad value 'maybe' for 'amp': expected bool"):
        make_config(TOY, "laptop", amp="maybe")
    with pytest.raises(ValueError, match="valid values: auto, cpu, cuda, cuda:N"):
        make_config(TOY, "laptop", device="tpu")
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        make_config(TOY, "laptop", optimizer="sgd", nesterov=True, momentum=0.0)
    assert parse_value("steps", "12") == 12 and make_config(TOY, "laptop", lr="0.5").lr == 0.5


def test_model_options_defaults_overrides_and_errors():
    # always complete: every declared option, at its default or the profile's value
    assert make_config(TOY).model_options == {"noise": 0.0, "mix": ""}
    assert make_config(TOY, "paper").model_options == {"noise": 0.1, "mix": ""}
    assert make_config(GAN).model_options == {"g_lr_ratio": 1.0}
    assert make_config("").model_options == {}
    # by name (not a field: an option), as model_options.<name>, as a dict (merged); strings parsed
    assert make_config(TOY, noise="0.5").model_options == {"noise": 0.5, "mix": ""}
    assert make_config(TOY, **{"model_options.mix": "swap"}).model_options["mix"] == "swap"
    assert make_config(TOY, "paper", model_options='{"mix": "swap"}').model_options == {"noise": 0.1, "mix": "swap"}
    assert make_config(TOY, noise=1).model_options["noise"] == 1.0  # int -> float
    assert parse_value("noise", "0.25", TOY) == 0.25 and parse_value("model_options.mix", "swap", TOY) == "swap"
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['nosie'\] for model 'toy_test_train'; "
                                         r"valid options: mix, noise"):
        make_config(TOY, **{"model_options.nosie": 0.1})
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['x'\].*valid options: mix, noise"):
        make_config(TOY, model_options={"x": 1})
    with pytest.raises(ValueError, match=r"bad value 'blend' for option 'mix' of model 'toy_test_train'; "
                                         r"valid values: '', swap"):
        make_config(TOY, mix="blend")
    with pytest.raises(ValueError, match=r"bad value 'lots' for 'model_options.noise': expected float"):
        make_config(TOY, noise="lots")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['noise'\].*no model is given"):
        make_config("", noise=0.1)
    with pytest.raises(ValueError, match="unknown model option 'nope'; options of model 'toy_test_gan': g_lr_ratio"):
        parse_value("model_options.nope", "1", GAN)
    # the registration's cross-field check
    with pytest.raises(ValueError, match="mix='swap' blends pairs of images: batch_size must be even, got 5"):
        make_config(TOY, mix="swap", batch_size=5)
    # a config built by hand is checked when trained: options must be complete and valid
    with pytest.raises(ValueError, match=r"model_options lacks \['mix', 'noise'\].*make_config"):
        validate(TrainConfig(model=TOY))
    with pytest.raises(ValueError, match="bad option name"):
        registry.register_model("toy_bad_option", arch={"laptop": {}, "paper": {}}, options={"a.b": 1})
    with pytest.raises(ValueError, match="not one of its choices"):
        Option("x", choices=("a", "b"))


def test_unregister_model():
    registry.register_model("toy_temporary", arch={"laptop": {}, "paper": {}})(nn.Identity)
    assert "toy_temporary" in registry.list_models()
    registry.unregister_model("toy_temporary")
    assert "toy_temporary" not in registry.list_models()
    with pytest.raises(KeyError, match="not registered"):
        registry.unregister_model("toy_temporary")


# ----------------------------------------------------------------------------------------------------------
# Hooks: data, optimisers, custom steps, stages
# ----------------------------------------------------------------------------------------------------------
def test_data_hooks_train_reproducibly_and_resume_exactly(tmp_path):
    opts = {"noise": 0.05, "mix": "swap", "num_classes": 3}  # the toy data's classes: soft targets of 3
    full, rfull, resumed, rres = kill_and_resume(tmp_path, TOY, **opts)
    plain, _ = run(None)
    assert not same_weights(full, plain)  # the per-item noise and per-batch mixing changed what was learned
    assert same_weights(full, resumed) and rres["history"] == rfull["history"]
    with pytest.raises(ValueError, match="makes 5-class targets.*the dataset has 3 classes: set num_classes=3"):
        run(None, mix="swap", num_classes=5)


def test_weight_decay_groups_exempt_biases_norms_embeddings_and_tokens():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.gain = nn.Parameter(torch.ones(1, 4, 1, 1))  # listed by no_weight_decay() below

        def no_weight_decay(self):
            return {"gain"}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 2)
            self.scale_table = nn.Parameter(torch.ones(2, 2))  # exempted by the no_decay pattern below
            self.frozen = nn.Linear(2, 2)
            self.frozen.requires_grad_(False)

    net = Net()
    groups = weight_decay_groups(net, 0.05, no_decay=("scale_*",))
    names = {id(p): n for n, p in net.named_parameters()}
    no, yes = ({names[id(p)] for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05]
    assert yes == {"block.conv.weight", "head.weight"}
    assert no == {"block.conv.bias", "block.bn.weight", "block.bn.bias", "block.gain", "pos_embed", "cls_token",
                  "norm.weight", "norm.bias", "head.bias", "scale_table"}
    # the same split as timm's own helper on a timm ViT (which lists pos_embed and cls_token itself)
    from timm.models.vision_transformer import VisionTransformer
    from timm.optim import param_groups_weight_decay

    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    ours = [{id(p) for p in g["params"]} for g in weight_decay_groups(vit, 0.05)]
    theirs = [{id(p) for p in g["params"]}
              for g in param_groups_weight_decay(vit, 0.05, no_weight_decay_list=vit.no_weight_decay())]
    assert ours == theirs
    # default_optimizers(decay_groups=True) keeps the entropy quantiles out of them (the aux optimiser's)
    toy = fresh_model()
    spec = default_optimizers(toy, cfg_of(optimizer="adamw", weight_decay=0.05), decay_groups=True)
    main, aux = spec["optimizers"]["main"], spec["optimizers"]["aux"]
    assert isinstance(main, torch.optim.AdamW) and [g["weight_decay"] for g in main.param_groups] == [0.0, 0.05]
    assert [p for g in aux.param_groups for p in g["params"]] == [toy.entropy_bottleneck.quantiles]
    sgd = make_optimizer(toy.parameters(), cfg_of(optimizer="sgd", momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"]


def test_gan_two_optimisers_alternating_steps_resume_exactly(tmp_path):
    full, rfull, resumed, rres = kill_and_resume(tmp_path, GAN, g_lr_ratio=0.5)
    assert same_weights(full, resumed) and rres["history"] == rfull["history"]
    assert_same_training_state(tmp_path / "full.pt", tmp_path / "cut.pt")
    ckpt = read_checkpoint(tmp_path / "full.pt")
    assert set(ckpt["optimizers"]) == {"d", "g"} and set(ckpt["schedulers"]) == {"d", "g"}
    assert ckpt["optimizers"]["g"]["param_groups"][0]["initial_lr"] == 0.5 * ckpt["optimizers"]["d"]["param_groups"][0]["initial_lr"]
    assert int(full.d_updates) == 10
    assert set(rfull["history"][0]) == {"step", "lr", "d_loss", "g_loss"}
    init = fresh_model(0, GAN)
    assert not torch.equal(full.g[0].weight, init.g[0].weight) and not torch.equal(full.d[0].weight, init.d[0].weight)


def test_momentum_encoder_and_queue_resume_exactly(tmp_path):
    full, rfull, resumed, rres = kill_and_resume(tmp_path, MOCO)
    assert same_weights(full, resumed) and rres["history"] == rfull["history"]
    assert_same_training_state(tmp_path / "full.pt", tmp_path / "cut.pt")
    init = fresh_model(0, MOCO)
    assert int(full.queue_ptr) == (10 * 4) % 16 and not torch.equal(full.queue, init.queue)
    assert not torch.equal(full.key.proj[2].weight, init.key.proj[2].weight)  # the EMA followed the online encoder
    assert not torch.equal(full.key.proj[2].weight, full.online.proj[2].weight)
    main = read_checkpoint(tmp_path / "full.pt")["optimizers"]["main"]
    assert main["param_groups"][0]["nesterov"] and "momentum_buffer" in main["state"][0]


def test_stage_freezes_parts_and_keeps_their_batchnorm_in_eval(tmp_path):
    model = fresh_model(0, MOCO)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def check_modes(step, record):
        model.train()  # whatever calls train(), the frozen BatchNorms stay in eval mode
        seen.append((model.online.stem[1].training, model.key.stem[1].training, model.online.proj.training,
                     model.online.stem[0].weight.requires_grad, model.online.proj[2].weight.requires_grad))

    _, res = run(tmp_path, "probe.pt", arch=MOCO, model=model, stage="probe", callback=check_modes)
    assert set(seen) == {(False, False, True, False, True)}
    after = model.state_dict()
    for k in before:
        frozen = k.startswith(("online.stem.", "key.stem."))
        assert torch.equal(before[k], after[k]) == frozen, k  # frozen: unchanged; the rest (EMA, queue) moved
    assert int(after["online.stem.1.num_batches_tracked"]) == 0  # the running statistics never moved
    main = read_checkpoint(tmp_path / "probe.pt")["optimizers"]["main"]
    n_trainable = sum(p.numel() > 0 for n, p in model.named_parameters() if n.startswith("online.proj"))
    assert sum(len(g["params"]) for g in main["param_groups"]) == n_trainable  # no frozen parameter in it
    assert model.online.stem[0].weight.requires_grad  # restored after the run
    # the unfrozen stage trains the stem and its BatchNorm statistics
    unfrozen, _ = run(None, arch=MOCO)
    assert not torch.equal(unfrozen.online.stem[0].weight, before["online.stem.0.weight"])
    assert int(unfrozen.online.stem[1].num_batches_tracked) == 10


def test_hook_errors_are_clear():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(2, 2)
            self.head = nn.Linear(2, 2)

        def frozen_parts(self, cfg):
            return ["encoder"]

    with pytest.raises(ValueError, match=r"frozen part\(s\) \['encoder'\] name no part of Bad; "
                                         r"its top-level parts are \['enc', 'head'\]"):
        train(Bad(), TrainConfig(steps=1, device="cpu"), dataset=ToyData(), progress=False)

    class FrozenInOptimizer(Bad):
        def frozen_parts(self, cfg):
            return ["enc"]

        def configure_optimizers(self, cfg):
            return {"optimizers": {"main": torch.optim.SGD(self.parameters(), lr=0.1)}}

    with pytest.raises(ValueError, match="optimizer 'main' holds parameters that do not require grad"):
        train(FrozenInOptimizer(), TrainConfig(steps=1, device="cpu"), dataset=ToyData(), progress=False)

    class NoMain(Bad):
        def frozen_parts(self, cfg):
            return []

        def configure_optimizers(self, cfg):
            return {"optimizers": {"g": torch.optim.SGD(self.parameters(), lr=0.1)}}

    with pytest.raises(ValueError, match=r"names no 'main' optimizer \(\['g'\]\).*define NoMain.train_step"):
        train(NoMain(), TrainConfig(steps=1, device="cpu"), dataset=ToyData(), progress=False)


# ----------------------------------------------------------------------------------------------------------
# DDP
# ----------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script: Path, timeout: int = 240) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    """Two processes (gloo): the compression toy (default hooks), and the momentum-encoder toy in its frozen
    stage, killed after a checkpoint and resumed, against an uninterrupted DDP run."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f'''
        import os, sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        import torch.distributed as dist
        torch.set_num_threads(1)
        import toys
        from cdlib import registry
        from cdlib.config import make_config
        from cdlib.train import train
        toys.register_toys()
        rank = int(os.environ["RANK"])
        out = {str(tmp_path)!r}

        def model_of(name):
            torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
            return registry.create_model(name, "laptop")

        cfg = make_config(toys.TOY, "laptop", **{BASE!r})
        model = model_of(toys.TOY)
        res = train(model, cfg, out=out + "/ddp.pt", dataset=toys.ToyData(), progress=False)
        torch.save({{"state_dict": model.state_dict(), "metrics": res["metrics"]}}, out + f"/rank{{rank}}.pt")

        # one group for the three runs below (train() keeps a group it did not create); a fresh store, since
        # the torchrun store still holds the keys of the group the first train() created and destroyed
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{_free_port()}", rank=rank,
                                world_size=int(os.environ["WORLD_SIZE"]))
        cfg = make_config(toys.MOCO, "laptop", stage="probe", **{BASE!r})
        model = model_of(toys.MOCO)
        res = train(model, cfg, out=out + "/moco_full.pt", dataset=toys.ToyData(), progress=False)
        torch.save({{"state_dict": model.state_dict(), "metrics": res["metrics"]}}, out + f"/moco_rank{{rank}}.pt")

        def stop(step, record):
            if step == 6:
                raise KeyboardInterrupt

        try:
            train(model_of(toys.MOCO), cfg, out=out + "/moco_cut.pt", dataset=toys.ToyData(), progress=False,
                  callback=stop)
        except KeyboardInterrupt:
            pass
        dist.barrier()
        model = model_of(toys.MOCO)
        res = train(model, cfg, out=out + "/moco_cut.pt", dataset=toys.ToyData(), progress=False)
        assert res["resumed_from"] == 5, res["resumed_from"]
        dist.destroy_process_group()
    '''))
    _torchrun(script)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, r1["state_dict"][k]), k
    assert r0["metrics"] == r1["metrics"]  # logged terms are all-reduced
    ckpt = read_checkpoint(tmp_path / "ddp.pt")
    assert ckpt["step"] == 10 and ckpt["world_size"] == 2
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    # the momentum-encoder toy: ranks agree (queue of keys gathered from both), resume is exact
    m0 = torch.load(tmp_path / "moco_rank0.pt", weights_only=True)
    m1 = torch.load(tmp_path / "moco_rank1.pt", weights_only=True)
    assert same_tree(m0, m1)
    assert int(m0["state_dict"]["queue_ptr"]) == (10 * 8) % 16
    assert_same_training_state(tmp_path / "moco_full.pt", tmp_path / "moco_cut.pt")
    assert not list(tmp_path.glob("*.tmp"))


def test_epochs_become_steps_at_this_dataset_size_and_world_size(tmp_path):
    """cfg.epochs > 0: the loop trains epochs * (dataset // (batch x processes)) steps, with warmup_epochs of
    warm-up, and the checkpoint keeps the config as given (epochs) plus the steps it resolved."""
    data = ToyData()
    per_epoch = len(data) // BASE["batch_size"]
    _, res = run(tmp_path, "ep.pt", epochs=2.0, warmup_epochs=0.5)
    cfg = cfg_of(epochs=2.0, warmup_epochs=0.5)
    assert cfg.epochs == 2.0  # an explicit epochs= keeps the epoch count, whatever steps= says
    assert res["step"] == 2 * per_epoch
    ckpt = read_checkpoint(tmp_path / "ep.pt")
    assert ckpt["config"]["epochs"] == 2.0 and ckpt["config"]["steps"] == BASE["steps"]
    assert ckpt["total_steps"] == 2 * per_epoch
    # warm-up of half an epoch (3 steps): the first record is step 2's lr, 2/3 of the way up
    assert res["history"][0]["lr"] == pytest.approx(BASE["lr"] * 2 / round(0.5 * per_epoch))
    _, again = run(tmp_path, "ep.pt", epochs=2.0, warmup_epochs=0.5)  # finished: resumes at its end
    assert again["resumed_from"] == 2 * per_epoch
    assert make_config(TOY, "laptop", steps=5).epochs == 0
