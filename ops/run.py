"""Run directories: ``runs/<name>/`` with config, metrics, TensorBoard, checkpoints, summary.

Layout:
    config.json      resolved config, run kind, command, git revision, host, start time
    metrics.jsonl    one JSON object a line: ``step``, ``time``, then namespaced keys
    tb/              TensorBoard events of the same scalars
    checkpoints/     safetensors + JSON, written atomically by the trainers
    summary.json     written once at the end
    status.json      running / finished / failed, with the run kind, pid, host and a heartbeat time;
                     readers show a ``running`` run whose process is gone as ``stale``

:class:`Run` writes a run directory (it implements the trainers' ``RunLog`` protocol); the
readers below are the only code that reads one: :func:`read_metrics` (whole file),
:class:`MetricTail` (a growing file), :func:`read_run` / :func:`scan_runs` (status, kind,
step, score, speed for the console), :func:`checkpoints`, :func:`run_config`,
:func:`read_summary`. The trainers' half (the ``RunLog`` protocol, atomic writes, JSON
conversion, which policy a run holds) is :mod:`steer.agent.runlog`, because ``agent`` never
imports ``ops``. Nothing here imports torch, so the console can read runs without it.

Resuming (``resume=True``) keeps the directory, drops metric lines newer than the
checkpoint the trainer resumes from (``rewind``), and drops a torn last line left by
a killed process, so the file stays a clean, monotone record.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from steer.agent.runlog import atomic_write_bytes, atomic_write_json, policy_kind, to_jsonable

CONFIG, METRICS, STATUS, SUMMARY, CHECKPOINTS = "config.json", "metrics.jsonl", "status.json", "summary.json", "checkpoints"
"""File names inside a run directory."""


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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, torn or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(run: Path) -> dict[str, Any] | None:
    """The run's summary.json, or None while the run has not finished."""
    path = Path(run) / SUMMARY
    return read_json(path) if path.exists() else None


def parse_records(lines: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """The metric records of metrics.jsonl lines; torn lines (a killed writer) are skipped."""
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line torn by a killed writer (and perhaps continued after --resume)
        if isinstance(record, dict):
            out.append(record)
    return out


def read_metrics(path: Path) -> list[dict]:
    """Records of a run's metrics.jsonl (``path`` is the run directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.exists():
        return []
    return parse_records(path.read_bytes().splitlines())


RESUME_MAY_CHANGE = frozenset({
    "resume", "progress", "max_minutes", "eval_episodes", "eval_routes", "runs", "name",
    "keep_best", "validation_routes", "validation_world_seed",  # which copy a run keeps: chosen after training
    "ppo.total_timesteps", "dsrl.env_steps",  # a resumed run may train to a larger budget
    "ppo.checkpoint_every", "bc.checkpoint_every", "dsrl.checkpoint_every", "bc.log_every",
    "ppo.torch_threads", "ppo.device",
    "max_wall_s", "domain_id", "node_timeout_s", "loopback"})  # steer adapt: when and where the robot is
"""Options (dotted, as in config.json) a resumed run may change: where it is found, how long, how often it
saves and where it computes; not what it trains."""


def config_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """``--flag: old -> new`` for every option that differs between two resolved configs (as JSON)."""
    out = []
    for key in sorted(set(before) | set(after)):
        name = f"{prefix}.{key}" if prefix else key
        if name in RESUME_MAY_CHANGE:
            continue
        a, b = before.get(key, "<unset>"), after.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name)
        elif a != b:
            out.append(f"--{name.replace('_', '-')} {json.dumps(a)} -> {json.dumps(b)}")
    return out


HEARTBEAT_S = 30.0
"""A running run rewrites status.json (its heartbeat) at least this often while it logs metrics."""


class Run:
    """One run directory; implements the trainers' ``RunLog`` protocol.

    status.json carries the writer's pid and host and a heartbeat time, so that a reader can tell a
    run whose process died (``stale``, see :func:`run_status`) from one that is running.
    """

    def __init__(self, path: Path, config: Any, kind: str, resume: bool = False, tensorboard: bool = True):
        self.path = Path(path)
        self.kind = kind
        self.checkpoint_dir = self.path / CHECKPOINTS
        self.metrics_path = self.path / METRICS
        if self.metrics_path.exists() and not resume:
            raise RunError(f"run {self.path} already exists; pass --resume to continue it or choose another --name.")
        if resume and not self.path.exists():
            raise RunError(f"cannot resume {self.path}: no such run directory.")
        cfg = {"kind": kind, "config": to_jsonable(config), "git_revision": git_revision(),
               "command": sys.argv, "host": socket.gethostname(), "started": time.time()}
        if resume:
            status, pid = read_json(self.path / STATUS), read_json(self.path / STATUS).get("pid")
            if (status.get("status") == "running" and status.get("host", socket.gethostname()) == socket.gethostname()
                    and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)):
                raise RunError(f"{self.path} is still running (pid {status.get('pid')} on this host); stop it "
                               "before resuming.")
        if resume and (self.path / CONFIG).exists():
            before = read_json(self.path / CONFIG)
            changed = config_changes(before.get("config", {}), cfg["config"])
            if changed:  # refused before anything in the directory is touched
                raise RunError(f"cannot resume {self.path} with a different config ({'; '.join(changed[:6])}"
                               f"{'; …' if len(changed) > 6 else ''}); resume with the run's own options or "
                               "start a new --name.")
            cfg["resumed_from"] = before.get("started")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / CONFIG, cfg)
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
        if record["time"] - self._heartbeat >= HEARTBEAT_S:
            self.set_status("running")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))

    def set_status(self, status: str, **extra: Any) -> None:
        """Write status.json: the status, and who writes it (pid, host) and when (the heartbeat readers age)."""
        self._heartbeat = time.time()
        atomic_write_json(self.path / STATUS, {"status": status, "kind": self.kind, "pid": os.getpid(),
                                               "host": socket.gethostname(), "time": self._heartbeat, **extra})

    def finish(self, summary: dict[str, Any]) -> None:
        """Write summary.json and mark the run finished."""
        atomic_write_json(self.path / SUMMARY, to_jsonable(summary))
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


# -- reading runs (the console) ------------------------------------------------------

STALE_AFTER_S = 600.0
"""A run that says running but has written no metrics for this long is stale (hung, or gone on another host)."""

SCORE_KEYS = (("charts/route_completion", "route"), ("eval/success_rate", "success"),
              ("charts/success_rate", "success"), ("eval/final_success_rate", "success"))
"""Metric keys shown as the run's score, first found wins (per record, newest record first)."""

KIND_LABELS = {"dsrl": "DSRL", "ppo": "PPO", "bc": "BC"}


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (a zombie child counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a finished child that nobody reaped yet is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class MetricTail:
    """Follows a ``metrics.jsonl`` that a trainer appends to.

    ``poll()`` returns only the records added since the last call. A torn last line
    (the writer is mid-line, or was killed) waits for its end; a file that got
    shorter or was replaced (a resumed run rewinds its metrics) is read again from
    the start, and ``reset`` tells the caller to drop what it had.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self.reset = False
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last poll (all of them after a rewrite)."""
        self.reset = False
        try:
            st = self.path.stat()
        except OSError:
            return []
        if st.st_ino != self._inode or st.st_size < self._offset:
            if self._inode is not None:
                self.reset = True
                self.records = []
            self._inode, self._offset, self._partial = st.st_ino, 0, b""
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        new = parse_records(lines)
        self.records.extend(new)
        return new

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric, skipping records without it and non-finite values."""
        steps, values = [], []
        for r in self.records:
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                steps.append(float(r.get("step", len(steps))))
                values.append(float(v))
        return steps, values

    def keys(self) -> list[str]:
        """Every metric key seen, sorted, without ``step`` and ``time``."""
        seen: set[str] = set()
        for r in self.records:
            seen.update(r)
        return sorted(seen - {"step", "time"})


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run (the safetensors + JSON pair)."""

    name: str
    size_bytes: int
    modified: float


@dataclass(frozen=True)
class RunInfo:
    """One row of the runs table."""

    name: str
    path: Path
    status: str
    """``running``, ``finished``, ``failed`` or ``stale`` (says running, but the process is gone or silent)."""
    kind: str
    """``dsrl``, ``ppo``, ``bc`` … from status.json or config.json."""
    step: int
    score: float | None
    """Success rate or route completion (0..1) from the newest record that has one."""
    score_label: str
    """``success`` or ``route`` (what ``score`` is)."""
    sps: float | None
    """Steps per second: ``charts/SPS`` if logged, else from the last records' steps and times."""
    pid: int | None
    updated: float | None
    """Time of the newest metric record (or of status.json)."""

    @property
    def kind_label(self) -> str:
        """``DSRL``, ``PPO`` … for the table."""
        return KIND_LABELS.get(self.kind, self.kind.upper() or "?")


def last_records(path: Path, max_bytes: int = 65536) -> list[dict[str, Any]]:
    """The complete records in the last ``max_bytes`` of a metrics file, oldest first."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read()
    except OSError:
        return []
    lines = tail.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line is cut
    return parse_records(lines)


def score_of(records: list[dict[str, Any]]) -> tuple[float | None, str]:
    """Success rate or route completion of the newest record that has one."""
    for r in reversed(records):
        for key, label in SCORE_KEYS:
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                return float(v), label
    return None, ""


def sps_of(records: list[dict[str, Any]]) -> float | None:
    """``charts/SPS`` of the newest record, else steps per second between the last two records."""
    for r in reversed(records):
        v = r.get("charts/SPS")
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    timed = [r for r in records if isinstance(r.get("time"), (int, float)) and isinstance(r.get("step"), int)]
    if len(timed) >= 2:
        a, b = timed[-2], timed[-1]
        dt = b["time"] - a["time"]
        if dt > 0 and b["step"] >= a["step"]:
            return (b["step"] - a["step"]) / dt
    return None


def run_status(status: dict[str, Any], host: str | None, updated: float | None, now: float,
               stale_after_s: float = STALE_AFTER_S) -> str:
    """running / finished / failed / stale from status.json, the pid and the age of the metrics.

    A run that says ``running`` is stale when its process is gone (same host), or when nothing
    was written for ``stale_after_s`` (a hung process, or one on another host that may be gone).
    """
    said = status.get("status", "")
    if said in ("finished", "failed"):
        return said
    if said != "running":
        return "stale" if said else "failed"
    pid = status.get("pid")
    host = status.get("host") or host  # the writer's own host; config.json's for older runs
    if host in (None, "", socket.gethostname()) and isinstance(pid, int) and not pid_alive(pid):
        return "stale"
    last = max((t for t in (updated, status.get("time")) if isinstance(t, (int, float))), default=None)
    if isinstance(last, (int, float)) and now - last > stale_after_s:
        return "stale"
    return "running"


def read_run(path: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S,
             name: str | None = None) -> RunInfo | None:
    """The :class:`RunInfo` of a run directory, or None when it is not one (``name``: default its folder name)."""
    path = Path(path)
    status_path, metrics_path, config_path = path / STATUS, path / METRICS, path / CONFIG
    if not (status_path.exists() or metrics_path.exists() or config_path.exists()):
        return None
    now = time.time() if now is None else now
    status, config = read_json(status_path), read_json(config_path)
    records = last_records(metrics_path)
    updated = None
    if records and isinstance(records[-1].get("time"), (int, float)):
        updated = float(records[-1]["time"])
    elif metrics_path.exists():
        updated = metrics_path.stat().st_mtime
    score, label = score_of(records)
    step = max((int(r["step"]) for r in records if isinstance(r.get("step"), (int, float))), default=0)
    kind = str(status.get("kind") or config.get("kind") or policy_kind(path) or "")
    pid = status.get("pid") if isinstance(status.get("pid"), int) else None
    return RunInfo(name=name or path.name, path=path, status=run_status(status, config.get("host"), updated, now,
                                                                stale_after_s),
                   kind=kind, step=step, score=score, score_label=label, sps=sps_of(records), pid=pid,
                   updated=updated if updated is not None else status.get("time"))


def _has_run_files(path: Path) -> bool:
    return (path / STATUS).exists() or (path / METRICS).exists()


def run_dirs(root: Path) -> list[Path]:
    """Run directories under ``root``: its folders, and the runs one level inside a folder that groups
    them (``steer demo`` writes ``<demo>/bc`` and ``<demo>/dsrl``; the demo folder itself is no run)."""
    root = Path(root)
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if not p.is_dir():
            continue
        if _has_run_files(p):
            out.append(p)
            continue
        nested = [c for c in sorted(p.iterdir()) if c.is_dir() and _has_run_files(c)]
        out += nested or ([p] if (p / CONFIG).exists() else [])
    return out


def scan_runs(root: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> list[RunInfo]:
    """Every run directory under ``root`` (see :func:`run_dirs`), newest activity first; a nested run
    is named by its path below ``root`` (``demo-1/dsrl``)."""
    root = Path(root)
    infos = [read_run(p, now, stale_after_s, name=p.relative_to(root).as_posix()) for p in run_dirs(root)]
    runs = [i for i in infos if i is not None]
    return sorted(runs, key=lambda r: -(r.updated or 0.0))


def checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints of a run (complete pairs only), newest first."""
    folder = Path(path) / CHECKPOINTS
    if not folder.is_dir():
        return []
    out = []
    for meta in folder.glob("*.json"):
        weights = meta.with_suffix(".safetensors")
        if weights.exists():
            st = weights.stat()
            out.append(Checkpoint(meta.stem, st.st_size + meta.stat().st_size, max(st.st_mtime, meta.stat().st_mtime)))
    return sorted(out, key=lambda c: -c.modified)


def run_config(path: Path) -> dict[str, Any]:
    """The run's config.json (empty when missing)."""
    return read_json(Path(path) / CONFIG)


def config_lines(config: dict[str, Any], width: int = 60) -> list[str]:
    """config.json flattened to ``a.b.c = value`` lines for a small screen."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            lines.append(f"{prefix} = {text}"[:width])

    walk("", {k: v for k, v in config.items() if k != "command"})
    if "command" in config:
        lines.insert(0, "command = " + " ".join(map(str, config["command"]))[: width - 10])
    return lines
