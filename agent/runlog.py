"""The trainers' side of a run directory: the ``RunLog`` protocol and the files trainers leave.

A run directory has one owner per concept, split across two modules because ``agent`` never
imports ``ops`` and the trainers live in ``agent``:

* here (torch-free, importable by trainers, export and ops alike): the :class:`RunLog` protocol
  trainers write through (``log``, ``rewind``, ``checkpoint_dir``), :class:`MemoryLog` for tests
  and notebooks, the atomic file writes every run file goes through, the one converter of
  configs and summaries to JSON (:func:`to_jsonable`), and the checkpoint that tells which
  policy a run holds (:data:`POLICY_CHECKPOINTS`, :func:`policy_kind`);
* :mod:`steer.ops.run`: the directory on disk, with its file names (config, metrics, status,
  summary), the writer ``Run`` that implements :class:`RunLog`, and every reader (metrics,
  status, run listings for the console).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol


class RunLog(Protocol):
    """Where a trainer writes metrics and checkpoints."""

    checkpoint_dir: Path

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record namespaced scalars (``charts/success_rate``, ``losses/q``) at ``step``."""

    def rewind(self, step: int) -> None:
        """Forget metrics logged after ``step``: a resumed trainer calls it with its checkpoint's step."""


class MemoryLog:
    """A RunLog that keeps metrics in a list (tests, notebooks)."""

    def __init__(self, checkpoint_dir: Path | None = None):
        self.checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="steer-ckpt-"))
        self.records: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.records.append({"step": step, **metrics})

    def rewind(self, step: int) -> None:
        self.records = [r for r in self.records if r["step"] <= step]

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.records if key in r]


def process_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere: set and restore (another thread creating a file in between would get umask 0o077).
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The file gets ``mode``, by default what ``open()`` would give it (0o666 less the umask):
    the temporary file is private (0o600) while it is written, and artifacts such as ONNX
    files and run records must stay readable by whoever the umask allows (a robot node
    running as another user).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write() names no file; say which one (a full disk)
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented JSON with sorted keys."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (nested), dicts, lists, tuples and paths as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


POLICY_CHECKPOINTS = {"dsrl": "dsrl_policy", "bc": "policy", "ppo": "last"}
"""Run kind → the checkpoint (in ``checkpoints/``) that holds its policy; first found wins, in this order
(a DSRL run's folder may also hold a copy of its BC policy)."""


def policy_kind(run: Path) -> str | None:
    """``dsrl``, ``bc`` or ``ppo``: which policy the run directory ``run`` holds, or None when it holds none."""
    ckpt = Path(run) / "checkpoints"
    for kind, name in POLICY_CHECKPOINTS.items():
        if (ckpt / f"{name}.safetensors").exists():
            return kind
    return None


def policy_checkpoint(run: Path, kind: str) -> Path:
    """The safetensors file of a run's policy of ``kind`` (see :data:`POLICY_CHECKPOINTS`)."""
    return Path(run) / "checkpoints" / f"{POLICY_CHECKPOINTS[kind]}.safetensors"
