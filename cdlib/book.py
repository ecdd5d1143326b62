"""What every chapter does first: validate its parameters and find where results go.

Chapters call :func:`setup_chapter` right after their ``parameters`` cell.  Bad
values (from papermill ``-p`` or an edited cell) stop the notebook with one clear
message instead of failing half-way through a training run.

Each chapter writes its results into a folder of its own, named after the chapter
(the name it gives :func:`setup_chapter`, e.g. ``"ch02"``):
``$CDLIB_RESULTS/<profile>/<name>/`` (default ``<repo>/results/<profile>/<name>/``), so two
chapters that save a result of the same name (``rate_accuracy``) never overwrite each other.
``make reproduce`` (``scripts/run_chapter.py``) writes the executed notebook into the same folder.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import RESULTS_ENV
from .registry import PROFILES

# a chapter's name is one path component: it names the chapter's results folder
CHAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def repo_root() -> Path:
    """The repository root (where ``_config.yml`` lives), whatever the working directory is."""
    here = Path(__file__).resolve().parent.parent
    if (here / "_config.yml").is_file():
        return here
    return Path.cwd()


def results_root() -> Path:
    """``$CDLIB_RESULTS`` if set, else ``<repo>/results`` (whatever the working directory is)."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else repo_root() / "results"


def chapter_results_dir(name: str, profile: str) -> Path:
    """The folder chapter ``name`` writes its results into on ``profile``: ``<results>/<profile>/<name>``
    (not created here)."""
    if not isinstance(name, str) or not CHAPTER_NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"bad chapter name {name!r}: expected one folder name such as 'ch02' "
                         "(letters, digits, '_', '-', '.')")
    return results_root() / profile / name


def _result_name(name: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"bad result name {name!r}: expected a file name without folders, e.g. 'rate_accuracy'")
    return name


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
        """``name`` inside this chapter's results folder (``results/<profile>/<chapter>/``)."""
        return self.results / _result_name(name)

    def save(self, name: str, obj) -> Path:
        """Write ``obj`` as ``results/<profile>/<chapter>/<name>.json``; returns the path (shown in a notebook
        relative to the results folder: a chapter's output never names a folder of the machine)."""
        from .eval import save_json

        path = save_json(obj, self.results / f"{_result_name(name)}.json")
        return SavedResult(path, where=f"{self.profile}/{self.name}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def laptop(self) -> bool:
        return self.profile == "laptop"

    def summary(self) -> str:
        """One line for the reader: the chapter's settings, without any path of this machine."""
        data = "no data folder" if self.data_root is None else "data folder given"
        return (f"{self.name}: {self.profile} profile on {self.device}, seed {self.seed}, "
                f"time budget {self.budget_s:g} s, {data}")

    def __repr__(self) -> str:
        return (f"Chapter({self.name}: profile={self.profile}, device={self.device}, seed={self.seed}, "
                f"data_root={self.data_root}, results={self.results})")


OUTPUT_WIDTH = 75  # characters of cell output that the book's column shows whole (scripts/check_site.py)


def say(*parts, sep: str = " ", width: int = OUTPUT_WIDTH) -> None:
    """``print(*parts, sep=sep)``, each line wrapped to ``width`` characters (continuations indented):
    a chapter's printed text then fits the book's column instead of running off its edge."""
    import textwrap

    text = sep.join(str(p) for p in parts)
    print("\n".join(textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False)
                    if len(line) > width else line for line in text.split("\n")))


class SavedResult(type(Path())):
    """The path of a saved result, shown as ``saved <file> in results/<profile>/<chapter>/``."""

    where = ""  # paths derived from this one (``.parent``, ``/``) carry no ``where``

    def __new__(cls, *args, where: str = ""):
        self = super().__new__(cls, *args)
        self.where = where
        return self

    def __init__(self, *args, where: str = ""):  # Python >= 3.12: Path takes the arguments in __init__
        try:
            super().__init__(*args)
        except TypeError:  # Python <= 3.11: PurePath.__init__ takes none
            pass
        self.where = where

    def __repr__(self) -> str:
        return f"saved {self.name} in results/{self.where}/" if self.where else f"SavedResult({self.name!r})"


def setup_chapter(name: str, profile: str = "laptop", device: str = "cpu", seed: int = 0, data_root=None,
                  budget_s: float = 180.0, require_data: tuple[str, ...] = ()) -> Chapter:
    """Validate chapter parameters; seed everything; return the chapter context.

    ``name`` (e.g. ``"ch02"``) names the chapter's results folder, ``results/<profile>/<name>/``
    (see :func:`chapter_results_dir`), created here.

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
    results = chapter_results_dir(name, profile)
    seed_everything(seed)
    results.mkdir(parents=True, exist_ok=True)
    return Chapter(name, profile, device, seed, root, float(budget_s), results)


def check_exercise(fn, number: str) -> None:
    """A chapter's check cell: grade ``fn`` (the reader's answer to exercise ``number``, e.g. ``"1.1"``) and
    print one line: passed, FAILED with the first difference found, or not written yet.  Never raises, so
    that the chapter runs with the stubs (``make grade`` is the grader that fails them)."""
    from .exercises import check_in_notebook

    check_in_notebook(fn, number)
