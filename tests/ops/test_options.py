"""The numeric-option checks (:mod:`steer.ops.options`), the resume config diff and run staleness, in process."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import math
import os
import subprocess
import sys
import typing
from dataclasses import dataclass, field

import pytest

from steer.ops.cli import COMMANDS
from steer.ops.options import Interval, OptionError, check_options, field_problems, numeric_fields, option_name


@dataclass(frozen=True)
class _Inner:
    width: int = field(default=8, metadata={"range": "[1, inf)"})
    sizes: tuple[int, ...] = field(default=(4, 4), metadata={"range": "[1, inf)"})
    offset: float = field(default=0.0, metadata={"range": "(-inf, inf)"})


@dataclass(frozen=True)
class _Outer:
    steps: int = 10
    rate: float | None = None
    frac: float = field(default=0.5, metadata={"range": "(0, 1]"})
    on: bool = True
    inner: _Inner = _Inner()


def test_intervals_parse_and_hold_their_ends():
    half_open = Interval.parse("(0, 1]")
    assert 1.0 in half_open and 0.5 in half_open
    assert 0.0 not in half_open and 1.0000001 not in half_open
    up = Interval.parse("[1, inf)")
    assert 1 in up and 10**12 in up and 0 not in up and math.inf not in up and math.nan not in up
    assert math.nan not in Interval.parse("(-inf, inf)") and -1e300 in Interval.parse("(-inf, inf)")
    with pytest.raises(ValueError):
        Interval.parse("1..2")
    with pytest.raises(ValueError):
        Interval.parse("[2, 1]")


def test_defaults_pass_and_each_bad_value_names_its_flag_and_range():
    assert field_problems(_Outer()) == []
    cases = {
        _Outer(steps=-1): "--steps must be an integer at least 0, got -1.",
        _Outer(rate=math.nan): "--rate must be a finite number at least 0, got nan.",
        _Outer(rate=-math.inf): "--rate must be a finite number at least 0, got -inf.",
        _Outer(frac=0.0): "--frac must be a finite number in (0, 1], got 0.0.",
        _Outer(inner=_Inner(width=0)): "--inner.width must be an integer at least 1, got 0.",
        _Outer(inner=_Inner(sizes=(4, 0, -2))): "each value of --inner.sizes must be an integer at least 1, got 0, -2.",
        _Outer(inner=_Inner(offset=math.inf)): "--inner.offset must be a finite number, got inf.",
    }
    for config, sentence in cases.items():
        assert field_problems(config) == [sentence]
    assert field_problems(_Outer(inner=_Inner(offset=-5.0))) == []  # a declared range may allow negatives
    with pytest.raises(OptionError, match=r"--steps .* \(1 more option") as err:
        check_options(_Outer(steps=-1, frac=2.0))
    assert err.value.user_facing


def _command_configs() -> list[tuple[str, type]]:
    out = []
    for name, cmd in COMMANDS.items():
        module, func = cmd.target.split(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except ImportError as err:  # an optional extra that this install lacks
            pytest.skip(f"{module} needs {err.name}, not installed")
        hints = typing.get_type_hints(fn)
        out.append((name, next(v for k, v in hints.items() if k != "return")))
    return out


def _default(config_type: type):
    required = {f.name: "x.onnx" for f in dataclasses.fields(config_type)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return config_type(**required)


def _replace_path(config, path: tuple[str, ...], value):
    if len(path) == 1:
        return dataclasses.replace(config, **{path[0]: value})
    return dataclasses.replace(config, **{path[0]: _replace_path(getattr(config, path[0]), path[1:], value)})


def test_every_numeric_option_of_every_command_refuses_nan_and_inf_and_its_default_passes():
    checked = 0
    for name, config_type in _command_configs():
        config = _default(config_type)
        assert field_problems(config) == [], name
        for flag, kind, _ in numeric_fields(config_type):
            path = tuple(p.replace("-", "_") for p in flag[2:].split("."))
            current = config
            for p in path:
                current = getattr(current, p)
            for bad in ((math.nan, math.inf, -math.inf) if kind == "float" else (-1,)):
                value = tuple(bad for _ in current) if isinstance(current, tuple) else bad
                try:
                    broken = _replace_path(config, path, value)
                except ValueError:
                    continue  # the config's own __post_init__ refused it first (tyro reports that, exit 2)
                problems = field_problems(broken)
                assert problems and flag in problems[0], (name, flag, bad, problems)
                checked += 1
    assert checked > 300  # ~200 numeric options over 12 commands, floats three ways


def test_declared_ranges_refuse_the_values_the_issue_found():
    from steer.agent.bc import BCConfig
    from steer.agent.ppo_config import PPOConfig
    from steer.ops.drive_cmd import DriveTrainConfig
    from steer.ops.stages import BCRunConfig

    assert "--bc.steps" in field_problems(BCRunConfig(bc=BCConfig(steps=0)))[0]
    assert "--bc.lr" in field_problems(BCRunConfig(bc=BCConfig(lr=math.nan)))[0]
    assert "--bc.chunk-len" in field_problems(BCRunConfig(bc=BCConfig(chunk_len=0)))[0]
    assert "--ppo.total-timesteps" in field_problems(DriveTrainConfig(ppo=PPOConfig(total_timesteps=-1)))[0]
    assert "--ppo.num-envs" in field_problems(DriveTrainConfig(ppo=PPOConfig(num_envs=0)))[0]
    assert "--max-minutes" in field_problems(DriveTrainConfig(max_minutes=math.nan))[0]
    assert option_name(("ppo", "env", "sim", "dt")) == "--ppo.env.sim.dt"


def test_config_changes_names_every_differing_option_but_not_run_control():
    from steer.ops.run import config_changes

    before = {"name": "a", "resume": False, "eval_episodes": 100, "bc": {"hidden_dim": 256, "lr": 0.001, "seed": 0}}
    after = {"name": "b", "resume": True, "eval_episodes": 5, "bc": {"hidden_dim": 64, "lr": 0.001, "seed": 1}}
    assert config_changes(before, after) == ["--bc.hidden-dim 256 -> 64", "--bc.seed 0 -> 1"]
    assert config_changes(before, before) == []


def test_a_write_that_fills_the_disk_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import steer.agent.runlog as runlog

    class FullDisk:  # the write boundary of atomic_write_bytes, as a full disk answers it
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runlog.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as err:
        runlog.atomic_write_json(tmp_path / "status.json", {"status": "running"})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "status.json")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_reads_stale_and_its_status_carries_pid_host_and_heartbeat(tmp_path, monkeypatch):
    import socket

    from steer.ops import run as runmod

    code = ("import os, sys; from steer.ops.run import Run; "
            "r = Run(sys.argv[1], {'x': 1}, kind='bc', tensorboard=False); r.log(1, {'a': 1.0}); "
            "os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], timeout=120)
    assert proc.returncode == -9
    status = runmod.read_json(tmp_path / "r" / "status.json")
    assert status["status"] == "running" and status["host"] == socket.gethostname()
    assert isinstance(status["pid"], int) and isinstance(status["time"], float)
    assert runmod.read_run(tmp_path / "r").status == "stale"

    # A live run keeps reading running, and its heartbeat moves while it logs.
    live = runmod.Run(tmp_path / "live", {"x": 1}, kind="bc", tensorboard=False)
    first = runmod.read_json(tmp_path / "live" / "status.json")["time"]
    assert runmod.read_run(tmp_path / "live").status == "running"
    monkeypatch.setattr(runmod, "HEARTBEAT_S", 0.0)
    live.log(1, {"a": 1.0})
    assert runmod.read_json(tmp_path / "live" / "status.json")["time"] > first
    live.close("finished")
    assert runmod.read_run(tmp_path / "live").status == "finished"


def test_resuming_a_run_whose_process_is_alive_is_refused_and_touches_nothing(tmp_path):
    from steer.ops.run import Run, RunError

    run = Run(tmp_path / "r", {"x": 1}, kind="bc", tensorboard=False)
    run.close("failed")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        status = tmp_path / "r" / "status.json"
        status.write_text(status.read_text().replace('"failed"', '"running"').replace(
            f'"pid": {os.getpid()}', f'"pid": {sleeper.pid}'))
        before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()}
        with pytest.raises(RunError, match=f"still running \\(pid {sleeper.pid}"):
            Run(tmp_path / "r", {"x": 1}, kind="bc", resume=True, tensorboard=False)
        assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()} == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # Once that process is gone the run is stale, and resuming it works.
    Run(tmp_path / "r", {"x": 1}, kind="bc", resume=True, tensorboard=False).close("finished")
