"""Run directories: ``runs/<name>/`` with config, metrics, TensorBoard, checkpoints, summary.

Layout:
    config.json      resolved config, command, git revision, start time
    metrics.jsonl    one JSON object a line: ``step``, ``time``, then namespaced keys
    tb/              TensorBoard events of the same scalars
    checkpoints/     safetensors + JSON, written atomically by the trainers
    summary.json     written once at the end
    status.json      running / finished / failed, with the pid (for the console)

Resuming (``resume=True``) keeps the directory, drops metric lines newer than the
checkpoint the trainer resumes from (``rewind``), and drops a torn last line left by
a killed process, so the file stays a clean, monotone record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from steer.agent.checkpoint import atomic_write_bytes, atomic_write_json


class RunError(ValueError):
    """A run directory that cannot be used as asked."""

    user_facing = True


def git_revision() -> str:
    """The git revision of the source tree (with ``-dirty`` for uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl file; a torn last line (killed writer) is skipped."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class Run:
    """One run directory; implements the trainers' ``RunLog`` protocol."""

    def __init__(self, path: Path, config: Any, kind: str, resume: bool = False, tensorboard: bool = True):
        self.path = Path(path)
        self.kind = kind
        self.checkpoint_dir = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        if self.metrics_path.exists() and not resume:
            raise RunError(f"run {self.path} already exists; pass --resume to continue it or choose another --name.")
        if resume and not self.path.exists():
            raise RunError(f"cannot resume {self.path}: no such run directory.")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        cfg = {"kind": kind, "config": to_jsonable(config), "git_revision": git_revision(),
               "command": sys.argv, "host": socket.gethostname(), "started": time.time()}
        if resume and (self.path / "config.json").exists():
            cfg["resumed_from"] = json.loads((self.path / "config.json").read_text()).get("started")
        atomic_write_json(self.path / "config.json", cfg)
        if resume:
            self._rewrite_metrics(read_metrics(self.metrics_path))
        self._metrics = open(self.metrics_path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        self.set_status("running")

    def _rewrite_metrics(self, records: list[dict]) -> None:
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def rewind(self, step: int) -> None:
        """Forget metrics after ``step`` (the step of the checkpoint being resumed)."""
        self._metrics.close()
        self._rewrite_metrics([r for r in read_metrics(self.metrics_path) if r.get("step", 0) <= step])
        self._metrics = open(self.metrics_path, "a", buffering=1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": int(step), "time": round(time.time(), 3), **{k: float(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))

    def set_status(self, status: str, **extra: Any) -> None:
        atomic_write_json(self.path / "status.json",
                          {"status": status, "kind": self.kind, "pid": os.getpid(), "time": time.time(), **extra})

    def finish(self, summary: dict[str, Any]) -> None:
        """Write summary.json and mark the run finished."""
        atomic_write_json(self.path / "summary.json", to_jsonable(summary))
        self.close("finished")

    def close(self, status: str = "failed") -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if not self._metrics.closed:
            self._metrics.close()
        self.set_status(status)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tb is not None or not self._metrics.closed:
            self.close("failed" if exc_type else "finished")
