"""The PPO trainer end to end: it learns to drive short routes, resumes after a kill, and its
checkpoint evaluates on held-out routes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ppo_worlds import short_route_env, tiny_ppo_config

from steer.agent.checkpoint import load_checkpoint
from steer.agent.ppo import CHECKPOINT, PPOConfigError, load_policy, make_model, obs_to_torch, train_ppo
from steer.agent.runlog import MemoryLog
from steer.driving.env import DriveVectorEnv
from steer.driving.evaluation import evaluate_routes, heldout_env_config
from steer.driving.score import route_summary


def _mean_action_rc(model, env_cfg, n_routes=16) -> float:
    def act(obs):
        return model.act(obs_to_torch(obs)).numpy()

    return route_summary(evaluate_routes(act, env_cfg, n_routes=n_routes, batch=n_routes))["route_completion"]


def test_short_training_raises_route_completion_above_the_untrained_policy(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_ppo_config(total_timesteps=12_288, checkpoint_every=100)
    torch.manual_seed(cfg.seed)
    untrained = make_model(DriveVectorEnv(1, cfg.env).single_observation_space, cfg.net)
    rc_before = _mean_action_rc(untrained, cfg.env)
    log = MemoryLog(tmp_path)
    res = train_ppo(cfg, log)
    assert res.global_step == 12_288 and res.updates == 12
    rc_after = _mean_action_rc(res.model, cfg.env)
    # The untrained Beta mean is ~0 throttle: the car stands still. Trained, it drives most routes.
    assert rc_before < 0.1
    print(f"route completion untrained {rc_before:.3f}, trained {rc_after:.3f}")
    assert rc_after > rc_before + 0.4, (rc_before, rc_after)
    # CleanRL / CaRL metric names, logged once per update.
    keys = set().union(*log.records)
    for k in ("charts/SPS", "charts/learning_rate", "losses/approx_kl", "losses/clipfrac", "losses/value_loss",
              "losses/policy_loss", "losses/entropy", "losses/explained_variance", "charts/route_completion",
              "charts/driving_score", "charts/episodic_return", "infractions/collision_vehicle_per_km"):
        assert k in keys, k
    lrs = [r["charts/learning_rate"] for r in log.records]
    np.testing.assert_allclose(lrs, [cfg.learning_rate * (1 - u / 12) for u in range(12)], rtol=1e-6)
    # The checkpoint loads back to the same policy.
    model, loaded_cfg, meta = load_policy(tmp_path)
    assert loaded_cfg == cfg and meta["global_step"] == 12_288
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)


_CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
from ppo_worlds import tiny_ppo_config
from steer.agent.ppo import train_ppo
from steer.agent.runlog import MemoryLog
train_ppo(tiny_ppo_config(total_timesteps=32 * 32 * 40), MemoryLog({ckpt!r}))
"""


def test_resume_after_kill_continues_model_optimizer_and_schedule(tmp_path):
    ckpt = tmp_path / "ckpt"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(Path(__file__).parent), ckpt=str(ckpt))],
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            meta_path = ckpt / f"{CHECKPOINT}.json"
            if meta_path.exists() and load_checkpoint(ckpt, CHECKPOINT)[1]["update"] >= 2:
                break
            assert child.poll() is None, "the training process died on its own"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint after 120 s")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state, meta = load_checkpoint(ckpt, CHECKPOINT)  # a kill mid-write still leaves a whole checkpoint
    u = meta["update"]
    cfg = tiny_ppo_config(total_timesteps=32 * 32 * 40)
    log = MemoryLog(ckpt)
    # Resuming with no further updates gives back exactly the saved weights.
    res0 = train_ppo(cfg, log, resume=True, max_updates=0)
    for k, v in res0.model.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])
    res = train_ppo(cfg, log, resume=True, max_updates=2)
    assert res.global_step == (u + 2) * 1024 and res.updates == u + 2
    assert [r["step"] for r in log.records] == [(u + 1) * 1024, (u + 2) * 1024]
    assert log.records[0]["charts/learning_rate"] == pytest.approx(cfg.learning_rate * (1 - u / 40))
    # Adam's step counter continued from the checkpoint: 4 minibatches x 3 epochs per update.
    state2, meta2 = load_checkpoint(ckpt, CHECKPOINT)
    assert meta2["update"] == u + 2
    steps = state2["optimizer"]["state"][0]["step"]
    assert float(steps) == 12 * (u + 2)


def test_bad_batch_split_is_a_user_facing_error(tmp_path):
    with pytest.raises(PPOConfigError, match="minibatches") as err:
        train_ppo(tiny_ppo_config(minibatch_size=300), MemoryLog(tmp_path))
    assert err.type.user_facing


def test_heldout_world_has_other_towns_and_enough_routes():
    train = short_route_env()
    held = heldout_env_config(train, n_routes=10, n_towns=2)
    assert held.sim.seed != train.sim.seed and held.sim.n_towns * held.sim.routes_per_town >= 10
    a, b = DriveVectorEnv(1, train), DriveVectorEnv(1, held)
    assert not np.array_equal(a.sim.pool.pts[0], b.sim.pool.pts[0])
