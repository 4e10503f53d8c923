"""Shared fixtures: a tiny trained BC policy and its demos, made once per test worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run two workers on two cores: one torch thread each keeps them from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory) -> Path:
    import steer.sim  # noqa: F401
    from steer.sim.demos import collect_demos
    from steer.sim.expert import PushExpert

    out = tmp_path_factory.mktemp("demos")
    collect_demos("steer/PlanarPush-v0", PushExpert(seed=1), 40, 1000, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_bc(tiny_demos, tmp_path_factory):
    """(policy, checkpoint_dir) of a BC diffusion policy trained for a few hundred steps."""
    import torch

    from steer.agent.bc import BCConfig, train_bc
    from steer.agent.runlog import MemoryLog
    from steer.sim.demos import load_demos

    torch.set_num_threads(1)
    demos = load_demos(tiny_demos)
    ckpt = tmp_path_factory.mktemp("bc")
    policy = train_bc(demos.observations, demos.actions, BCConfig(steps=300, checkpoint_every=300), MemoryLog(ckpt),
                      {"task": "steer/PlanarPush-v0"}, progress=False)
    return policy, ckpt
