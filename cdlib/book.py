"""What every chapter does first: validate its parameters and find where results go.

Chapters call :func:`setup_chapter` right after their ``parameters`` cell.  Bad
values (from papermill ``-p`` or an edited cell) stop the notebook with one clear
message instead of failing half-way through a training run.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .registry import PROFILES


def repo_root() -> Path:
    """The repository root (where ``_config.yml`` lives), whatever the working directory is."""
    here = Path(__file__).resolve().parent.parent
    if (here / "_config.yml").is_file():
        return here
    return Path.cwd()


@dataclass
class Chapter:
    name: str
    profile: str
    device: str
    seed: int
    data_root: Path | None
    budget_s: float
    results: Path
    started: float = field(default_factory=time.perf_counter)

    def path(self, name: str) -> Path:
        return self.results / name

    def save(self, name: str, obj) -> Path:
        from .eval import save_json

        return save_json(obj, self.results / f"{name}.json")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def laptop(self) -> bool:
        return self.profile == "laptop"

    def __repr__(self) -> str:
        return (f"Chapter({self.name}: profile={self.profile}, device={self.device}, seed={self.seed}, "
                f"data_root={self.data_root}, results={self.results})")


def setup_chapter(name: str, profile: str = "laptop", device: str = "cpu", seed: int = 0, data_root=None,
                  budget_s: float = 180.0, require_data: tuple[str, ...] = ()) -> Chapter:
    """Validate chapter parameters; seed everything; return the chapter context.

    ``require_data``: sub-paths of ``data_root`` the paper profile needs (e.g.
    ``("imagenet/train", "kodak")``); each is checked to exist, with the expected layout in the message.
    """
    import torch

    from .train import seed_everything

    if profile not in PROFILES:
        raise ValueError(f"bad parameter profile={profile!r}; valid values: {', '.join(PROFILES)}")
    if not isinstance(device, str) or not (device in ("cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"bad parameter device={device!r}; valid values: 'cpu', 'cuda', 'cuda:N'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu'")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"bad parameter seed={seed!r}: expected an integer >= 0")
    if not isinstance(budget_s, (int, float)) or budget_s <= 0:
        raise ValueError(f"bad parameter budget_s={budget_s!r}: expected seconds > 0")
    root = None
    if data_root not in (None, ""):
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data_root={str(data_root)!r} is not a folder; expected a folder holding "
                                    f"{', '.join(require_data) or 'the datasets'}")
    if profile == "paper" and require_data:
        if root is None:
            raise FileNotFoundError(f"the paper profile needs data_root=/path/to/data holding "
                                    f"{', '.join(f'<data_root>/{r}' for r in require_data)}")
        missing = [r for r in require_data if not (root / r).exists()]
        if missing:
            raise FileNotFoundError(f"data_root {root} lacks {', '.join(missing)}; expected layout: "
                                    f"{', '.join(f'<data_root>/{r}' for r in require_data)}")
    seed_everything(seed)
    base = Path(os.environ["CDLIB_RESULTS"]) if os.environ.get("CDLIB_RESULTS") else repo_root() / "results"
    results = base / profile
    results.mkdir(parents=True, exist_ok=True)
    return Chapter(name, profile, device, seed, root, float(budget_s), results)
