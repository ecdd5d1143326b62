"""The training loop: determinism, resume, NaN handling, DDP, checkpoints, config errors."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cdlib import registry
from cdlib.config import make_config, parse_value
from cdlib.train import (CKPT_FORMAT, epoch_batches, export_checkpoint, fingerprint, load_model, lr_factor,
                         read_checkpoint, train)

REPO = Path(__file__).resolve().parents[1]
TOY = "toy_test_train"

# The toy model and dataset are also written into the subprocess scripts below (same source).
TOY_SRC = '''
import torch, torch.nn as nn, torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from cdlib import registry


class Toy(CompressionModel):
    """A few hundred parameters: conv encoder, entropy bottleneck, conv decoder, linear classifier."""

    def __init__(self, N=4, num_classes=3):
        super().__init__()
        self.enc = nn.Conv2d(3, N, 3, stride=2, padding=1)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.dec = nn.ConvTranspose2d(N, 3, 5, stride=2, padding=2, output_padding=1)
        self.head = nn.Linear(N, num_classes)
        self.poison = False

    def forward(self, x):
        y = self.enc(x)
        y_hat, lk = self.entropy_bottleneck(y)
        return {"x_hat": self.dec(y_hat), "likelihoods": {"y": lk}, "logits": self.head(y_hat.mean((2, 3)))}

    def loss_terms(self, batch, cfg):
        x = batch["image"]
        out = self(x)
        n, _, h, w = x.shape
        mse = F.mse_loss(out["x_hat"], x)
        if self.poison:
            mse = mse * float("nan")
        return {"mse": mse, "bpp": -torch.log2(out["likelihoods"]["y"]).sum() / (n * h * w),
                "ce": F.cross_entropy(out["logits"], batch["label"])}

    def loss_weights(self, cfg):
        return {"mse": cfg.lmbda * 255.0**2, "bpp": 1.0, "ce": 0.1}


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=24, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.epochs = []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def register(name):
    if name not in registry._REGISTRY:
        registry.register_model(name, arch={"laptop": {"N": 4}, "paper": {"N": 8}})(Toy)
'''
exec(TOY_SRC)  # defines Toy, ToyData, register  # noqa: S102
register(TOY)  # noqa: F821

BASE = dict(steps=10, batch_size=4, image_size=16, lr=1e-2, aux_lr=1e-2, warmup_steps=2, log_every=2,
            ckpt_every=5, num_train=24, dataset="shapes", device="cpu")


def cfg_of(**kw):
    return make_config(TOY, "laptop", **{**BASE, **kw})


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return registry.create_model(TOY, "laptop")


def run(tmp, name="ckpt.pt", seed=0, model=None, data=None, **kw):
    cfg = cfg_of(seed=seed, **{k: v for k, v in kw.items() if k not in ("callback", "resume")})
    model = model or fresh_model(seed)
    res = train(model, cfg, out=None if tmp is None else Path(tmp) / name, dataset=data or ToyData(),  # noqa: F821
                progress=False, callback=kw.get("callback"), resume=kw.get("resume", True))
    return model, res


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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

    def stop_at_6(step, record):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut.pt", callback=stop_at_6)
    assert read_checkpoint(tmp_path / "cut.pt")["step"] == 5
    data = ToyData()  # noqa: F821
    resumed, rres = run(tmp_path, "cut.pt", model=fresh_model(123), data=data)
    assert rres["resumed_from"] == 5
    assert data.epochs == [0, 1]  # 24 images / batch 4 = 6 steps per epoch: step 5 is in epoch 0
    assert same_weights(full, resumed)
    assert rres["history"] == rfull["history"] and rres["metrics"] == rfull["metrics"]
    # a finished checkpoint resumes to a no-op
    again, rag = run(tmp_path, "cut.pt", model=fresh_model(7))
    assert rag["resumed_from"] == 10 and same_weights(full, again)


def test_sigkill_then_resume_is_exact(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(TOY_SRC + textwrap.dedent(f'''
        import os, signal
        torch.set_num_threads(1)
        from cdlib.config import make_config
        from cdlib.train import train
        register({TOY!r})
        cfg = make_config({TOY!r}, "laptop", **{BASE!r})
        torch.manual_seed(0)
        model = registry.create_model({TOY!r}, "laptop")

        def die(step, record):
            if step == 7:
                os.kill(os.getpid(), signal.SIGKILL)

        train(model, cfg, out={str(tmp_path / "k.pt")!r}, dataset=ToyData(), progress=False, callback=die)
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
    _, res = run(tmp_path, "c.pt", steps=5, lr=2e-2, resume=False)  # overwrites
    assert res["resumed_from"] == 0 and read_checkpoint(tmp_path / "c.pt")["config"]["lr"] == 2e-2
    # num_workers does not change the numbers: resuming with another value is fine
    _, res = run(tmp_path, "c.pt", steps=5, lr=2e-2, num_workers=1)
    assert res["resumed_from"] == 5


def test_checkpoint_format_atomic_and_load_model_round_trip(tmp_path):
    model, res = run(tmp_path, "rt.pt", steps=5)
    assert not list(tmp_path.glob("*.tmp"))
    ckpt = read_checkpoint(tmp_path / "rt.pt")
    for key in ("format", "model", "profile", "arch", "config", "step", "state_dict", "optimizer",
                "aux_optimizer", "scheduler", "scaler", "rng", "history", "metrics", "fingerprint"):
        assert key in ckpt
    assert ckpt["format"] == CKPT_FORMAT and ckpt["model"] == TOY and ckpt["arch"] == {"N": 4}
    assert ckpt["fingerprint"] == res["fingerprint"] and len(res["fingerprint"]) == 16
    loaded = load_model(tmp_path / "rt.pt")
    for k, v in model.state_dict().items():
        if not k.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.entropy_bottleneck._quantized_cdf.numel() > 0  # update(force=True) ran
    assert loaded.fingerprint == fingerprint(loaded) and len(loaded.fingerprint) == 16
    assert loaded.checkpoint_meta["step"] == 5 and loaded.checkpoint_meta["config"]["lr"] == 1e-2
    # init_from: another run starts from these weights (strict=False, reported)
    cfg = cfg_of(steps=1, init_from=str(tmp_path / "rt.pt"), lr=1e-9, aux_lr=1e-9, grad_clip=0.0)
    m2 = fresh_model(5)
    r2 = train(m2, cfg, dataset=ToyData(), progress=False)  # noqa: F821
    assert r2["init_from"]["missing"] == [] and r2["init_from"]["unexpected"] == []
    assert torch.allclose(m2.enc.weight, model.enc.weight, atol=1e-6)


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
    assert "optimizer" not in dst and "rng" not in dst
    assert dst["state_dict"]["dec.weight"].dtype == torch.float16  # 300 elements: cast
    assert dst["state_dict"]["enc.bias"].dtype == torch.float32    # small: kept
    for k, v in src["state_dict"].items():
        if "entropy_bottleneck" in k:
            assert torch.equal(dst["state_dict"][k], v), k
    m = load_model(tmp_path / "x.pt")
    assert m.dec.weight.dtype == torch.float32
    assert torch.allclose(m.dec.weight, src["state_dict"]["dec.weight"], atol=1e-3)
    assert (tmp_path / "x.pt").stat().st_size < (tmp_path / "e.pt").stat().st_size


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


def test_config_errors_list_valid_choices():
    with pytest.raises(ValueError, match="unknown profile 'huge'; valid profiles: laptop, paper"):
        make_config(TOY, "huge")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['stpes'\]; valid keys: model, profile, steps"):
        make_config(TOY, "laptop", stpes=3)
    with pytest.raises(ValueError, match="bad value 'sgd' for 'optimizer'; valid values: adam, adamw"):
        make_config(TOY, "laptop", optimizer="sgd")
    with pytest.raises(ValueError, match="bad value 0 for 'steps': must be > 0"):
        make_config(TOY, "laptop", steps=0)
    with pytest.raises(ValueError, match="bad value 'maybe' for 'amp': expected bool"):
        make_config(TOY, "laptop", amp="maybe")
    with pytest.raises(ValueError, match="valid values: auto, cpu, cuda, cuda:N"):
        make_config(TOY, "laptop", device="tpu")
    assert parse_value("steps", "12") == 12 and make_config(TOY, "laptop", lr="0.5").lr == 0.5


def test_deit_augment_trains_reproducibly_and_resumes_exactly(tmp_path):
    deit = {"augment": "deit", "num_classes": 3}  # the toy's classes: mixup builds one-hot targets
    full, rfull = run(tmp_path, "full.pt", **deit)
    plain, _ = run(None)
    assert not same_weights(full, plain)  # mixup and RandAugment changed what was learned
    again, ragain = run(None, **deit)
    assert same_weights(full, again) and ragain["history"] == rfull["history"]

    def stop_at_6(step, record):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut.pt", callback=stop_at_6, **deit)
    resumed, rres = run(tmp_path, "cut.pt", model=fresh_model(123), **deit)
    assert rres["resumed_from"] == 5 and same_weights(full, resumed) and rres["history"] == rfull["history"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(TOY_SRC + textwrap.dedent(f'''
        import os
        torch.set_num_threads(1)
        from cdlib.config import make_config
        from cdlib.train import train
        register({TOY!r})
        cfg = make_config({TOY!r}, "laptop", **{BASE!r})
        rank = int(os.environ["RANK"])
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        model = registry.create_model({TOY!r}, "laptop")
        res = train(model, cfg, out={str(tmp_path / "ddp.pt")!r}, dataset=ToyData(), progress=False)
        torch.save({{"state_dict": model.state_dict(), "metrics": res["metrics"]}},
                   {str(tmp_path)!r} + f"/rank{{rank}}.pt")
    '''))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, r1["state_dict"][k]), k
    assert r0["metrics"] == r1["metrics"]  # logged terms are all-reduced
    ckpt = read_checkpoint(tmp_path / "ddp.pt")
    assert ckpt["step"] == 10 and ckpt["world_size"] == 2
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    assert not list(tmp_path.glob("*.tmp"))
