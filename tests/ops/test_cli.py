import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steer.ops.cli import COMMANDS, main
from steer.ops.run import read_metrics

STEER = [sys.executable, "-m", "steer.ops.cli"]


def steer(*args, check=True, **kw):
    proc = subprocess.run([*STEER, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"steer {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", ["demo", "collect", "bc", "dsrl", "eval"])
def test_command_help_shows_an_example(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*name.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and COMMANDS[name].example in out


def test_unknown_command_and_bad_input_are_one_sentence():
    proc = steer("fly", check=False)
    assert proc.returncode == 2 and "unknown command" in proc.stderr
    proc = steer("bc", "--data", "/nonexistent/data", "--runs", "/tmp/never", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "steer collect" in proc.stderr


def test_collect_bc_dsrl_eval_make_complete_run_directories(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    steer("collect", "--out", data, "--episodes", "8")
    steer("bc", "--data", data, "--runs", runs, "--name", "b", "--bc.steps", "60", "--bc.log-every", "20",
          "--eval-episodes", "4")
    steer("dsrl", "--policy", runs / "b", "--runs", runs, "--name", "d", "--dsrl.env-steps", "400",
          "--dsrl.warmup-env-steps", "200", "--dsrl.utd", "1", "--dsrl.eval-every", "200", "--dsrl.eval-episodes", "4",
          "--eval-episodes", "4")
    for run in (runs / "b", runs / "d"):
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["git_revision"] and cfg["config"]
        assert list((run / "tb").glob("events.out.tfevents.*"))
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        assert (run / "summary.json").exists()
        records = read_metrics(run / "metrics.jsonl")
        assert records and all("step" in r and "time" in r for r in records)
    bc_summary = json.loads((runs / "b" / "summary.json").read_text())
    assert bc_summary["eval"]["episodes"] == 4
    d_summary = json.loads((runs / "d" / "summary.json").read_text())
    assert d_summary["env_steps"] >= 400 and d_summary["algorithm"] == "dsrl-sac"
    assert (runs / "d" / "checkpoints" / "dsrl_policy.json").exists()
    proc = steer("eval", runs / "d", "--episodes", "3")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kind"] == "dsrl" and result["episodes"] == 3
    # An existing run is not silently overwritten.
    proc = steer("bc", "--data", data, "--runs", runs, "--name", "b", check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def _checkpoint_step(path: Path) -> int:
    try:
        return json.loads(path.read_text())["meta"]["env_steps"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_killed_dsrl_run_resumes_to_the_same_step_count(tiny_bc, tmp_path):
    _, ckpt = tiny_bc
    bc_run = tmp_path / "bc"
    (bc_run / "checkpoints").mkdir(parents=True)
    for f in ckpt.glob("policy.*"):
        (bc_run / "checkpoints" / f.name).write_bytes(f.read_bytes())
    budget = 2400
    args = ["dsrl", "--policy", bc_run, "--runs", tmp_path, "--name", "d", "--dsrl.env-steps", budget,
            "--dsrl.warmup-env-steps", "300", "--dsrl.utd", "1", "--dsrl.checkpoint-every", "400",
            "--dsrl.eval-every", "100000", "--eval-episodes", "0"]
    proc = subprocess.Popen([*STEER, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = tmp_path / "d" / "checkpoints" / "dsrl_trainer.json"
    deadline = time.time() + 300
    while _checkpoint_step(ck) < 800 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_step(ck)
    assert 800 <= killed_at < budget
    steer(*args, "--resume")
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    # The budget is reached exactly as an uninterrupted run would (to within one vector step of chunks).
    assert budget <= summary["env_steps"] < budget + 4 * 4
    records = read_metrics(tmp_path / "d" / "metrics.jsonl")
    lines = (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(records), "metrics.jsonl has a corrupted line"
    steps = [r["step"] for r in records if "charts/episodes" in r]
    assert steps == sorted(steps), "metrics went back in time after the resume"
    episodes = [r["charts/episodes"] for r in records if "charts/episodes" in r]
    assert episodes == sorted(episodes)
    from steer.agent.dsrl import load_dsrl_policy

    actor, base, meta = load_dsrl_policy(tmp_path / "d" / "checkpoints")
    assert meta["env_steps"] == summary["env_steps"]
    assert not list((tmp_path / "d" / "checkpoints").glob("*.tmp"))
