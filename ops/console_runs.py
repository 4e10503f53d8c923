"""What the console knows about run directories, without a terminal.

:func:`scan_runs` reads every ``runs/<name>/`` into a :class:`RunInfo` (status, kind,
step, success or route completion, SPS); :class:`MetricTail` follows a growing
``metrics.jsonl``; :class:`RunJobs` starts, stops and resumes ``steer …`` child
processes and remembers which runs it started.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STALE_AFTER_S = 600.0
"""A run that says running but has written no metrics for this long is stale (hung, or gone on another host)."""

SCORE_KEYS = (("charts/route_completion", "route"), ("eval/success_rate", "success"),
              ("charts/success_rate", "success"), ("eval/final_success_rate", "success"))
"""Metric keys shown as the run's score, first found wins (per record, newest record first)."""

KIND_LABELS = {"dsrl": "DSRL", "ppo": "PPO", "bc": "BC"}


class ConsoleError(Exception):
    """Something the operator asked for that cannot be done: one sentence, shown in the console."""

    user_facing = True


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


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
        new = []
        for line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a line torn by a killed writer and then continued after --resume
            if isinstance(record, dict):
                new.append(record)
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


def _last_records(path: Path, max_bytes: int = 65536) -> list[dict[str, Any]]:
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
    out = []
    for line in lines:
        try:
            r = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


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
    if host in (None, "", socket.gethostname()) and isinstance(pid, int) and not pid_alive(pid):
        return "stale"
    last = max((t for t in (updated, status.get("time")) if isinstance(t, (int, float))), default=None)
    if isinstance(last, (int, float)) and now - last > stale_after_s:
        return "stale"
    return "running"


def read_run(path: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> RunInfo | None:
    """The :class:`RunInfo` of a run directory, or None when it is not one."""
    path = Path(path)
    status_path, metrics_path, config_path = path / "status.json", path / "metrics.jsonl", path / "config.json"
    if not (status_path.exists() or metrics_path.exists() or config_path.exists()):
        return None
    now = time.time() if now is None else now
    status, config = _read_json(status_path), _read_json(config_path)
    records = _last_records(metrics_path)
    updated = None
    if records and isinstance(records[-1].get("time"), (int, float)):
        updated = float(records[-1]["time"])
    elif metrics_path.exists():
        updated = metrics_path.stat().st_mtime
    score, label = score_of(records)
    step = max((int(r["step"]) for r in records if isinstance(r.get("step"), (int, float))), default=0)
    kind = str(status.get("kind") or config.get("kind") or "")
    pid = status.get("pid") if isinstance(status.get("pid"), int) else None
    return RunInfo(name=path.name, path=path, status=run_status(status, config.get("host"), updated, now,
                                                                stale_after_s),
                   kind=kind, step=step, score=score, score_label=label, sps=sps_of(records), pid=pid,
                   updated=updated if updated is not None else status.get("time"))


def scan_runs(root: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> list[RunInfo]:
    """Every run directory directly under ``root``, newest activity first."""
    root = Path(root)
    if not root.is_dir():
        return []
    infos = [read_run(p, now, stale_after_s) for p in sorted(root.iterdir()) if p.is_dir()]
    runs = [i for i in infos if i is not None]
    return sorted(runs, key=lambda r: -(r.updated or 0.0))


def checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints of a run (complete pairs only), newest first."""
    folder = Path(path) / "checkpoints"
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
    return _read_json(Path(path) / "config.json")


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


# -- child processes ---------------------------------------------------------------

STEER = (sys.executable, "-m", "steer.ops.cli")
"""How the console starts ``steer``: the same interpreter, so the same installation."""


@dataclass
class Job:
    """A ``steer`` process started by the console."""

    argv: list[str]
    process: subprocess.Popen
    log_path: Path
    run_name: str | None = None
    stopped_by_operator: bool = False
    reported: bool = False
    """Whether :meth:`RunJobs.reap` has already returned it as ended."""
    kill_at: float | None = None
    """Monotonic time after which a stopped job that still runs is killed."""
    started: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def last_line(self) -> str:
        """The last non-empty line the process printed (its error, when it failed)."""
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""


def resume_argv(config: dict[str, Any]) -> list[str]:
    """The ``steer`` arguments that resume the run whose config.json this is."""
    command = config.get("command")
    if not isinstance(command, list) or len(command) < 2:
        raise ConsoleError("this run's config.json has no command line to resume it with; start it again by hand.")
    args = [str(a) for a in command[1:]]
    return args if "--resume" in args else args + ["--resume"]


def _name_of(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--name" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--name="):
            return a.split("=", 1)[1]
    return None


class RunJobs:
    """Starts ``steer …`` as child processes of the console and stops them.

    Stop sends SIGINT, as Ctrl-C would: the trainer closes its run (status ``failed``) and a
    later resume continues from the last checkpoint. A process that ignores it is killed
    after ``kill_after_s``.
    """

    def __init__(self, runs_root: Path, steer: tuple[str, ...] = STEER, log_dir: Path | None = None):
        self.runs_root = Path(runs_root)
        self.steer = tuple(steer)
        self.log_dir = Path(log_dir) if log_dir else self.runs_root / ".console"
        self.jobs: list[Job] = []

    def start(self, args: list[str] | str) -> Job:
        """Start ``steer ARGS`` (a list, or one command line as typed; a leading ``steer`` is dropped)."""
        if isinstance(args, str):
            try:
                args = shlex.split(args)
            except ValueError as err:
                raise ConsoleError(f"cannot parse that command line ({err}).") from None
        args = list(args)
        if args and args[0] == "steer":
            args = args[1:]
        if not args:
            raise ConsoleError("type a steer command to start, e.g. `dsrl --policy runs/bc --name dsrl2`.")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"job-{int(time.time() * 1000)}.log"
        log = open(log_path, "wb")
        argv = [*self.steer, *args]
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.runs_root.parent if self.runs_root.parent.exists() else None,
                                    start_new_session=True)  # Ctrl-C in the console must not reach it
        except OSError as err:
            raise ConsoleError(f"could not start {argv[0]} ({err.strerror}).") from None
        finally:
            log.close()
        job = Job(argv, proc, log_path, _name_of(args))
        self.jobs.append(job)
        return job

    def resume(self, run: RunInfo) -> Job:
        """Start the run again from its last checkpoint, with the command line it was started with."""
        if run.status == "running":
            raise ConsoleError(f"{run.name} is still running; stop it before resuming.")
        job = self.start(resume_argv(run_config(run.path)))
        job.run_name = run.name
        return job

    def job_for(self, run_name: str) -> Job | None:
        """The newest job of a run that is still running."""
        for job in reversed(self.jobs):
            if job.run_name == run_name and job.running:
                return job
        return None

    def stop(self, run: RunInfo, kill_after_s: float = 10.0) -> int:
        """Interrupt a running run (our child or any local process of the run); returns the pid signalled."""
        job = self.job_for(run.name)
        pid = job.process.pid if job else run.pid
        if run.status != "running" or pid is None:
            raise ConsoleError(f"{run.name} is not running here; nothing to stop.")
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            raise ConsoleError(f"{run.name}'s process {pid} is gone already.") from None
        except PermissionError:
            raise ConsoleError(f"not allowed to stop process {pid} of {run.name}.") from None
        if job is not None:
            job.stopped_by_operator = True
            job.kill_at = time.monotonic() + kill_after_s
        return pid

    def reap(self) -> list[Job]:
        """Kill jobs that outlived their stop grace period; returns the jobs that ended since the last call."""
        now = time.monotonic()
        ended = []
        for job in self.jobs:
            if job.running and job.kill_at is not None and now > job.kill_at:
                job.process.kill()
            if job.process.poll() is not None and not job.reported:
                job.reported = True
                ended.append(job)
        return ended

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """Interrupt every job still running (the console is closing), then kill stragglers."""
        live = [j for j in self.jobs if j.running]
        for job in live:
            job.process.send_signal(signal.SIGINT)
        end = time.monotonic() + timeout_s
        for job in live:
            try:
                job.process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
