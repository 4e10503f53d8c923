"""A short DSRL run must measurably improve a weak BC policy (and leave its weights alone)."""

import numpy as np
import pytest
import torch

import steer.sim  # noqa: F401
from steer.agent.bc import BCConfig, train_bc
from steer.agent.dsrl import DSRLConfig, base_policy_fn, train_dsrl
from steer.agent.evaluate import evaluate_chunked
from steer.agent.runlog import MemoryLog
from steer.sim.demos import collect_demos
from steer.sim.expert import PushExpert

TASK = "steer/PlanarPush-v0"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 150 s alone on 2 cores; far longer when the machine is shared
def test_short_dsrl_run_improves_a_weak_policy(tmp_path):
    torch.set_num_threads(1)
    demos = collect_demos(TASK, PushExpert(seed=1000), 150, 1000, tmp_path / "data", progress=False)
    policy = train_bc(demos.observations, demos.actions, BCConfig(steps=2000, checkpoint_every=2000),
                      MemoryLog(tmp_path / "bc"), {"task": TASK}, progress=False)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    bc = evaluate_chunked(TASK, base_policy_fn(policy, 0), 100)
    assert bc.success_rate <= 0.6, "the base policy should be weak for this test to mean something"
    fn, _ = train_dsrl(policy, TASK, DSRLConfig(env_steps=8_000, warmup_env_steps=1_000, utd=8,
                                                eval_every=10**6, seed=0), MemoryLog(tmp_path / "dsrl"),
                       progress=False)
    dsrl = evaluate_chunked(TASK, fn, 100)
    # Two binomial samples of 100: a gain of 0.15 is more than 2 standard errors of the difference.
    assert dsrl.success_rate >= bc.success_rate + 0.15, (bc.success_rate, dsrl.success_rate)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), f"DSRL changed the diffusion weights ({k})"
    assert np.isfinite(dsrl.returns).all()
