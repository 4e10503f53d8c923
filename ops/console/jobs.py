"""The ``steer`` child processes the console starts, stops and resumes.

:class:`RunJobs` starts ``steer …`` commands, interrupts them as Ctrl-C would and resumes a
stopped run with the command line recorded in its config.json. Reading run directories is
:mod:`steer.ops.run`; this module only controls processes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer.ops.console import ConsoleError
from steer.ops.run import RunInfo, run_config


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
