"""What a user sees when an option, a dataset, a run directory or the disk is wrong: exit 2, one
sentence on stderr, no traceback, and nothing created or changed on disk."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steer.ops.cli import main

STEER = [sys.executable, "-m", "steer.ops.cli"]


def steer(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*STEER, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def one_sentence(proc_or_text, rc: int | None = None) -> str:
    """The single stderr line of a refused command (asserting there is exactly one, and no traceback)."""
    if isinstance(proc_or_text, subprocess.CompletedProcess):
        assert proc_or_text.returncode == 2, proc_or_text.stderr
        text = proc_or_text.stderr
    else:
        text = proc_or_text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime (ns): equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, flag", [
    (["bc", "--bc.steps", "0"], "--bc.steps"),
    (["drive", "train", "--ppo.total-timesteps", "-1"], "--ppo.total-timesteps"),
    (["drive", "train", "--max-minutes", "nan"], "--max-minutes"),
])
def test_a_bad_numeric_option_is_one_sentence_before_anything_exists(args, flag, tmp_path, tiny_demos):
    line = one_sentence(steer(*args, "--runs", tmp_path / "runs", *(["--data", tiny_demos] if args[0] == "bc" else []),
                              cwd=tmp_path))
    assert line.startswith(f"steer {args[0]}") and flag in line and "got" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, flag", [
    (["bc", "--bc.lr", "nan"], "--bc.lr"),
    (["bc", "--bc.hidden-dim", "0"], "--bc.hidden-dim"),
    (["bc", "--bc.batch-size", "-4"], "--bc.batch-size"),
    (["dsrl", "--dsrl.batch-size", "0"], "--dsrl.batch-size"),
    (["dsrl", "--dsrl.gamma", "inf"], "--dsrl.gamma"),
    (["dsrl", "--safe-margin", "-0.1"], "--safe-margin"),
    (["collect", "--episodes", "0"], "--episodes"),
    (["collect", "--mirrored-fraction", "1.5"], "--mirrored-fraction"),
    (["drive", "train", "--ppo.learning-rate", "nan"], "--ppo.learning-rate"),
    (["drive", "train", "--ppo.net.cnn-channels", "16", "0"], "--ppo.net.cnn-channels"),
    (["drive", "eval", "runs/x", "--routes", "0"], "--routes"),
    (["demo", "--demos", "0"], "--demos"),
    (["robot", "sim", "--domain-id", "300"], "--domain-id"),
    (["robot", "run", "--policy", "p.onnx", "--rate-hz", "0"], "--rate-hz"),
    (["console", "--refresh-s", "nan"], "--refresh-s"),
])
def test_every_command_refuses_out_of_range_numbers_in_one_sentence(args, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert flag in one_sentence(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_changed_config_names_the_options_and_changes_nothing(tmp_path, tiny_demos, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["bc", "--data", tiny_demos, "--runs", tmp_path / "runs", "--name", "b", "--bc.steps", "3",
            "--bc.batch-size", "16", "--bc.hidden-dim", "32", "--eval-episodes", "0"]
    assert main(list(map(str, base))) == 0
    run = tmp_path / "runs" / "b"
    before = snapshot(run)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    proc = steer(*base[:-4], "--bc.hidden-dim", "64", "--bc.seed", "3", "--eval-episodes", "0", "--resume",
                 cwd=tmp_path)
    line = one_sentence(proc)
    assert "--bc.hidden-dim 32 -> 64" in line and "--bc.seed 0 -> 3" in line and "--resume" not in line
    assert snapshot(run) == before


def test_collect_refuses_to_overwrite_a_dataset_without_overwrite(tmp_path, tiny_demos):
    from steer.sim.demos import load_demos

    data = tmp_path / "data"
    shutil.copytree(tiny_demos, data)
    before = snapshot(data)
    line = one_sentence(steer("collect", "--out", data, "--episodes", "1", cwd=tmp_path))
    assert "--overwrite" in line and str(data) in line
    assert snapshot(data) == before and len(load_demos(data).actions) == 40
    proc = steer("collect", "--out", data, "--episodes", "2", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(load_demos(data).actions) == 2


def _metadata(folder: Path) -> Path:
    return next(folder.glob("*/*/data/metadata.json"))


@pytest.mark.parametrize("env_id, entry_point", [("this:PlanarPush-v0", "steer.sim.push:PlanarPushEnv"),
                                                 ("steer/PlanarPush-v0", "this:Zen"),
                                                 ("steer/Nope-v0", "steer.sim.push:PlanarPushEnv")])
def test_a_dataset_naming_a_foreign_env_is_refused_without_importing_it(env_id, entry_point, tmp_path, tiny_demos):
    data = tmp_path / "data"
    shutil.copytree(tiny_demos, data)
    meta_path = _metadata(data)
    meta = json.loads(meta_path.read_text())
    spec = json.loads(meta["env_spec"])
    meta["env_spec"] = json.dumps({**spec, "id": env_id, "entry_point": entry_point})
    meta_path.write_text(json.dumps(meta))
    proc = steer("bc", "--data", data, "--runs", tmp_path / "runs", "--bc.steps", "2", cwd=tmp_path)
    line = one_sentence(proc)
    assert repr(env_id) in line and "steer/PlanarPush-v0" in line
    assert "The Zen of Python" not in proc.stdout  # what importing the module `this` prints
    assert not (tmp_path / "runs").exists()


def test_a_truncated_dataset_is_one_sentence(tmp_path, tiny_demos):
    data = tmp_path / "data"
    shutil.copytree(tiny_demos, data)
    h5 = next(data.rglob("main_data.hdf5"))
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    line = one_sentence(steer("bc", "--data", data, "--runs", tmp_path / "runs", "--bc.steps", "2", cwd=tmp_path))
    assert str(data) in line and "collect it again" in line
    assert not (tmp_path / "runs").exists()


def _in_own_mount(mount_opts: str, folder: Path, args: list) -> subprocess.CompletedProcess:
    """``steer args`` with ``folder`` a fresh tmpfs (``mount_opts``) in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private tmpfs mount")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(folder))}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel refuses an unprivileged tmpfs mount: {probe.stderr.strip()}")
    cmd = " ".join(shlex.quote(str(a)) for a in [*STEER, *args])
    return subprocess.run(["unshare", "-rm", "sh", "-c",
                           f"mount -t tmpfs -o {mount_opts} tmpfs {shlex.quote(str(folder))} && exec {cmd}"],
                          capture_output=True, text=True, timeout=300, cwd=folder.parent)


def test_a_full_disk_is_one_sentence(tmp_path, tiny_demos):
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = _in_own_mount("size=64k", runs, ["bc", "--data", tiny_demos, "--runs", runs, "--bc.steps", "2",
                                            "--bc.batch-size", "16", "--eval-episodes", "0"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1].split("\r")[-1]  # after the progress bar
    assert last.startswith("steer bc: the disk is full: cannot write ") and str(runs) in last


def test_a_read_only_run_folder_is_one_sentence(tmp_path, tiny_demos):
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = _in_own_mount("ro", runs, ["bc", "--data", tiny_demos, "--runs", runs, "--bc.steps", "2"])
    line = one_sentence(proc)
    assert line.startswith(f"steer bc: cannot write {runs}") and "read-only" in line


def test_collect_onto_a_full_disk_is_one_sentence_not_a_crash(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = _in_own_mount("size=64k", data, ["collect", "--out", data / "d", "--episodes", "3"])
    assert proc.returncode == 2, proc.stderr[-2000:]  # h5py itself crashes (SIGSEGV) on a disk that fills mid-write
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1].split("\r")[-1]
    assert last == (f"steer collect: the disk is full: cannot write {data / 'd'}; free some space (or choose "
                    "another folder) and run again.")
