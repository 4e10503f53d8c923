"""Files of a run directory get the user's umask, as files written with open() would."""

import os
import stat

import pytest


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_records_and_checkpoints_follow_the_umask(tmp_path, umask):
    import numpy as np

    from steer.agent.checkpoint import atomic_write_bytes, process_umask, save_checkpoint
    from steer.ops.run import Run

    old = os.umask(umask)
    try:
        assert process_umask() == umask
        run = Run(tmp_path / "run", config={"lr": 1e-3}, kind="bc", tensorboard=False)
        save_checkpoint(run.checkpoint_dir, "policy", {"w": np.zeros(3)})
        run.finish({"success_rate": 0.5})
        secret = tmp_path / "secret.bin"
        atomic_write_bytes(secret, b"x", mode=0o600)  # an explicit mode wins over the umask
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "status.json", "summary.json", "policy.safetensors", "policy.json"} <= names
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {p.name: oct(0o666 & ~umask) for p in files}
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
