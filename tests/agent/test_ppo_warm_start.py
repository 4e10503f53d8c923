"""Warm start by imitation of the scripted driver (DAgger) and the critic-only updates after it."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from ppo_worlds import short_route_env, tiny_ppo_config

from steer.agent.ppo import (
    Batch, beta_targets, imitation_loss, labelled_sample_limit, make_env, make_model, minibatch_indices, obs_to_torch,
    ppo_update, train_ppo, warm_start,
)
from steer.agent.ppo_config import WarmStartConfig
from steer.agent.runlog import MemoryLog
from steer.driving.env import DriveVectorEnv
from steer.driving.evaluation import evaluate_routes
from steer.driving.score import route_summary


def _mean_action_rc(model, env_cfg, n_routes=16) -> float:
    def act(obs):
        return model.act(obs_to_torch(obs)).numpy()

    return route_summary(evaluate_routes(act, env_cfg, n_routes=n_routes, batch=n_routes))["route_completion"]


def test_env_labels_observations_with_the_scripted_drivers_action_only_when_asked():
    env = DriveVectorEnv(4, short_route_env())
    _, info = env.reset(seed=0)
    assert "expert_action" not in info
    _, info = env.reset(seed=0, options={"expert_labels": True})
    a = info["expert_action"]
    assert a.shape == (4, 2) and np.abs(a).max() <= 1.0 and (a[:, 1] > 0).all()  # standing at the start: go
    _, _, _, _, info = env.step(a)
    assert info["expert_action"].shape == (4, 2)
    env.reset(seed=0, options={"expert_labels": False})
    assert "expert_action" not in env.step(a)[4]


def test_dagger_warm_start_drives_short_routes_before_any_ppo_update():
    torch.set_num_threads(1)
    cfg = tiny_ppo_config(warm_start=WarmStartConfig(rounds=3, steps=32, epochs=6, minibatch_size=256))
    env = make_env(cfg.num_envs, cfg)
    torch.manual_seed(0)
    model = make_model(env.single_observation_space, cfg.net)
    rc_before = _mean_action_rc(model, cfg.env)
    obs, _, steps, stats = warm_start(model, env, cfg, seed=0)
    rc_after = _mean_action_rc(model, cfg.env)
    print(f"route completion untrained {rc_before:.3f}, after imitation {rc_after:.3f}; {stats}")
    assert steps == 3 * 32 * cfg.num_envs and stats["warm_start/samples"] == steps
    assert rc_before < 0.1 and rc_after > 0.6
    assert stats["warm_start/steer_error"] < 0.15
    assert "expert_action" not in env.step(np.zeros((cfg.num_envs, 2), np.float32))[4]  # labels off for PPO


def test_no_warm_start_round_begins_after_the_deadline():
    """A run's time limit holds in the warm start: with the deadline passed, the first round is the last."""
    import time

    torch.set_num_threads(1)
    cfg = tiny_ppo_config(warm_start=WarmStartConfig(rounds=3, steps=8, epochs=1, minibatch_size=256))
    env = make_env(cfg.num_envs, cfg)
    model = make_model(env.single_observation_space, cfg.net)
    _, _, steps, stats = warm_start(model, env, cfg, seed=0, deadline=time.time())
    assert steps == 8 * cfg.num_envs and stats["warm_start/rounds"] == 1
    _, _, steps, stats = warm_start(model, env, cfg, seed=0, deadline=time.time() + 3600)
    assert steps == 3 * 8 * cfg.num_envs and stats["warm_start/rounds"] == 3


def test_the_imitation_step_size_falls_linearly_to_its_final_fraction_over_the_rounds():
    torch.set_num_threads(1)
    ws = WarmStartConfig(rounds=3, steps=8, epochs=1, minibatch_size=256, learning_rate=1e-3, final_lr_fraction=0.1)
    cfg = tiny_ppo_config(warm_start=ws)
    env = make_env(cfg.num_envs, cfg)
    model = make_model(env.single_observation_space, cfg.net)
    log = []
    for rounds in (1, 2, 3):
        c = dataclasses.replace(cfg, warm_start=dataclasses.replace(ws, rounds=rounds))
        log.append(warm_start(model, env, c, seed=0)[3]["warm_start/learning_rate"])
    # the last round of 1, 2 and 3 rounds: 1e-3 (a single round keeps the start), 1e-4, 1e-4
    np.testing.assert_allclose(log, [1e-3, 1e-4, 1e-4], rtol=1e-9)
    mid = dataclasses.replace(ws, rounds=5)
    stats = warm_start(model, env, dataclasses.replace(cfg, warm_start=mid), seed=0,
                       deadline=0.0)[3]  # stops after the first round
    assert stats["warm_start/learning_rate"] == pytest.approx(1e-3)
    constant = warm_start(model, env, dataclasses.replace(cfg, warm_start=dataclasses.replace(ws, final_lr_fraction=1.0)),
                          seed=0)[3]
    assert constant["warm_start/learning_rate"] == pytest.approx(1e-3)


def test_sample_weights_make_the_imitation_loss_a_weighted_mean():
    from steer.agent.ppo import weighted_nll

    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])
    plain = weighted_nll(logp, (4.0, 1.0))
    assert plain.item() == pytest.approx((6.0 + 16.0 + 26.0) / 3)
    assert weighted_nll(logp, (4.0, 1.0), torch.ones(3)).item() == pytest.approx(plain.item())
    # a sample of weight 0 drops out; weight 3 counts three times
    assert weighted_nll(logp, (4.0, 1.0), torch.tensor([1.0, 0.0, 3.0])).item() == pytest.approx((6.0 + 3 * 26.0) / 4)


def test_the_warm_start_reports_the_share_of_samples_where_the_driver_reacts():
    torch.set_num_threads(1)
    cfg = tiny_ppo_config(warm_start=WarmStartConfig(rounds=1, steps=64, epochs=1, minibatch_size=256, focus_weight=4.0))
    env = make_env(cfg.num_envs, cfg)
    model = make_model(env.single_observation_space, cfg.net)
    stats = warm_start(model, env, cfg, seed=0)[3]
    assert 0.0 < stats["warm_start/focus_share"] < 0.5


def test_critic_only_update_leaves_the_policy_unchanged():
    cfg = tiny_ppo_config()
    env = make_env(8, cfg)
    obs, _ = env.reset(seed=0)
    torch.manual_seed(0)
    model = make_model(env.single_observation_space, cfg.net)
    o = obs_to_torch(obs)
    with torch.no_grad():
        x, logp, _, value = model(o)
    n = len(logp)
    batch = Batch(o, x, logp, torch.randn(n), value + 1.0, value)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ppo_update(model, opt, batch, minibatch_indices(n, n, 3, torch.Generator().manual_seed(0)), cfg, policy=False)
    with torch.no_grad():
        _, logp2, _, value2 = model(o, x)
    torch.testing.assert_close(logp2, logp)
    assert (value2 - value).mean() > 0.02  # the critic moved toward the returns


def test_trainer_counts_the_warm_start_steps_and_logs_its_losses(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_ppo_config(total_timesteps=4 * 32 * 32, warm_start=WarmStartConfig(rounds=1, steps=16, value_updates=1))
    log = MemoryLog(tmp_path)
    res = train_ppo(cfg, log)
    assert res.global_step == 16 * 32 + 4 * 32 * 32
    assert "warm_start/nll" in log.records[0] and log.records[0]["warm_start/samples"] == 16 * 32
    assert dataclasses.replace(cfg, warm_start=WarmStartConfig()).warm_start.rounds == 0


def test_warm_start_under_two_ddp_processes(tmp_path):
    from steer.ops.drive_stages import DriveTrainConfig, train_driving_local

    ppo = tiny_ppo_config(total_timesteps=2048,
                          warm_start=WarmStartConfig(rounds=1, steps=8, value_updates=1, ppo_coef=0.5))
    out = train_driving_local(DriveTrainConfig(name="w", runs=tmp_path, eval_routes=0, progress=False, ppo=ppo,
                                               processes=2))
    # Both ranks imitate on their own envs with averaged gradients, then train (with the imitation term on
    # each rank's labelled rollouts); the steps of both count.
    assert out.global_step == 8 * 32 + 2048 and out.summary["world_size"] == 2
    records = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [r["charts/imitation_coef"] for r in records if "charts/SPS" in r] == [0.5, 0.5]


def test_imitation_term_pulls_the_policy_toward_the_drivers_actions_during_ppo():
    """With zero advantages PPO alone moves the policy only through the entropy bonus and the shared trunk
    of the critic; ``guide_coef`` moves it toward ``batch.guide``."""
    cfg = tiny_ppo_config()
    env = make_env(16, cfg)
    obs, info = env.reset(seed=0, options={"expert_labels": True})
    o = obs_to_torch(obs)
    guide = beta_targets(info["expert_action"])

    def guide_logp_after(coef: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = make_model(env.single_observation_space, cfg.net)
        with torch.no_grad():
            x, logp, _, value, before = model(o, guide=guide)
            before = before.sum(-1)
        n = len(logp)
        batch = Batch(o, x, logp, torch.zeros(n), value, value, guide=guide)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        stats = ppo_update(model, opt, batch, minibatch_indices(n, n, 20, torch.Generator().manual_seed(0)), cfg,
                           guide_coef=coef)
        with torch.no_grad():
            after = model(o, guide=guide)[4].sum(-1)
        assert ("losses/imitation_nll" in stats) == (coef > 0)
        return before.mean().item(), after.mean().item()

    b0, a0 = guide_logp_after(0.0)
    b1, a1 = guide_logp_after(1.0)
    print(f"log-likelihood of the driver's actions: PPO alone {b0:.3f} -> {a0:.3f}, with imitation {b1:.3f} -> {a1:.3f}")
    assert a1 - b1 > 2.0 and a1 - b1 > 4.0 * abs(a0 - b0)


def test_focus_weights_pull_the_policy_harder_toward_the_drivers_action_where_they_are_up():
    cfg = tiny_ppo_config()
    env = make_env(16, cfg)
    obs, info = env.reset(seed=0, options={"expert_labels": True})
    o = obs_to_torch(obs)
    guide = beta_targets(info["expert_action"])
    focus = torch.zeros(16)
    focus[:4] = 1.0

    def gain(weight: torch.Tensor | None) -> tuple[float, float]:
        torch.manual_seed(0)
        model = make_model(env.single_observation_space, cfg.net)
        with torch.no_grad():
            x, logp, _, value, before = model(o, guide=guide)
        batch = Batch(o, x, logp, torch.zeros(16), value, value, guide=guide, guide_weight=weight)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ppo_update(model, opt, batch, minibatch_indices(16, 16, 5, torch.Generator().manual_seed(0)), cfg,
                   guide_coef=1.0)
        with torch.no_grad():
            d = (model(o, guide=guide)[4] - before).sum(-1)
        return d[:4].mean().item(), d[4:].mean().item()

    plain_in, plain_out = gain(None)
    focus_in, focus_out = gain(1.0 + 30.0 * focus)
    print(f"log-likelihood gain in / out of focus: plain {plain_in:.3f} / {plain_out:.3f}, "
          f"weighted {focus_in:.3f} / {focus_out:.3f}")
    # Under Adam and the gradient clip the step's size hardly changes; where it goes does: the
    # weighted update gains more on the focus samples relative to the others.
    assert focus_in - focus_out > plain_in - plain_out + 0.005


def test_trainer_weighs_its_imitation_term_by_the_drivers_focus(tmp_path):
    torch.set_num_threads(1)
    # 4 traffic vehicles around each route: the driver brakes for some within the 64 labelled steps
    cfg = tiny_ppo_config(total_timesteps=2 * 32 * 32, env=short_route_env(n_npcs=4),
                          warm_start=WarmStartConfig(rounds=1, steps=64, value_updates=0, ppo_coef=0.5, focus_weight=8.0))
    log = MemoryLog(tmp_path)
    train_ppo(cfg, log)
    nll = [r["losses/imitation_nll"] for r in log.records if "losses/imitation_nll" in r]
    assert len(nll) == 2 and all(np.isfinite(nll))
    assert 0.0 < log.records[0]["warm_start/focus_share"] < 0.5


def test_trainer_labels_its_rollouts_and_decays_the_imitation_weight(tmp_path):
    torch.set_num_threads(1)
    batch = 32 * 32
    cfg = tiny_ppo_config(total_timesteps=4 * batch,
                          warm_start=WarmStartConfig(rounds=0, ppo_coef=0.5, ppo_decay_steps=4 * batch))
    log = MemoryLog(tmp_path)
    train_ppo(cfg, log)
    coefs = [r["charts/imitation_coef"] for r in log.records if "charts/imitation_coef" in r]
    nll = [r["losses/imitation_nll"] for r in log.records if "losses/imitation_nll" in r]
    assert coefs == [0.375, 0.25, 0.125, 0.0]  # linear in the env steps after each rollout
    assert len(nll) == 3 and all(np.isfinite(nll))  # the last update's weight is 0: no imitation term


def test_head_penalty_keeps_the_imitated_policy_able_to_leave_hard_braking():
    """Labels at the Beta's edge (the driver's full brake) push α's raw output toward -inf, where softplus has
    no gradient left: without the penalty the policy can no longer learn to drive off (one seed of the
    30-minute benchmark ended so); with it, it can."""
    cfg = tiny_ppo_config()
    env = make_env(64, cfg)
    obs, _ = env.reset(seed=0)
    o = obs_to_torch(obs)
    brake = beta_targets(np.tile([[0.0, -1.0]], (64, 1)))
    go = beta_targets(np.tile([[0.0, 0.7]], (64, 1)))

    def brake_then_go(head_l2: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = make_model(env.single_observation_space, cfg.net)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for targets, steps in ((brake, 2000), (go, 300)):
            for _ in range(steps):
                loss, _, _ = imitation_loss(model, o, targets, head_l2)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()
            if targets is brake:
                with torch.no_grad():
                    raw_min = model.policy_head(model.features(o))[:, 1].min().item()
        return raw_min, model.act(o)[:, 1].mean().item()

    raw_free, accel_free = brake_then_go(0.0)
    raw_kept, accel_kept = brake_then_go(1e-3)
    print(f"raw α output after braking labels: {raw_free:.1f} free, {raw_kept:.1f} penalized; "
          f"mean accel after go labels: {accel_free:.2f} free, {accel_kept:.2f} penalized")
    assert raw_free < -100 and abs(accel_free) < 0.1  # dead: the go labels cannot move it
    assert raw_kept > -10 and accel_kept > 0.5


def test_action_weights_scale_each_dimension_of_the_imitation():
    """``warm_start.action_weights`` multiplies each action dimension's log-likelihood; a weight vector
    of the wrong length is refused in one sentence."""
    from steer.agent.ppo import PPOConfigError, weighted_nll

    logp = torch.tensor([[-1.0, -3.0], [-2.0, -5.0]])
    assert weighted_nll(logp, (1.0, 1.0)).item() == pytest.approx((4.0 + 7.0) / 2)
    assert weighted_nll(logp, (4.0, 1.0)).item() == pytest.approx((4 * 1.0 + 3.0 + 4 * 2.0 + 5.0) / 2)
    assert weighted_nll(logp, (0.0, 1.0)).item() == pytest.approx((3.0 + 5.0) / 2)
    with pytest.raises(PPOConfigError, match="2 action dimensions"):
        weighted_nll(logp, (1.0, 1.0, 1.0))


def test_the_labelled_set_is_bounded_by_memory_as_well_as_by_samples():
    """One step of 256 envs: vector observations (about 1 kB a sample) stay bounded by max_samples, BEV
    ones (8x64x64 bytes) by max_memory_mb, shared among the ranks."""
    ws = WarmStartConfig(max_samples=524_288, max_memory_mb=2048)
    vector = {"vector": [np.zeros((256, 253), np.float32)], "measurements": [np.zeros((256, 2), np.float32)]}
    bev = {"bev": [np.zeros((256, 8, 64, 64), np.uint8)], "measurements": [np.zeros((256, 2), np.float32)]}
    assert labelled_sample_limit(vector, ws, 1) == 524_288
    assert labelled_sample_limit(vector, ws, 2) == 262_144
    per_sample = 8 * 64 * 64 + 8
    assert labelled_sample_limit(bev, ws, 1) == 2048 * 2**20 // per_sample
    assert labelled_sample_limit(bev, ws, 2) == 1024 * 2**20 // per_sample
    assert labelled_sample_limit(bev, dataclasses.replace(ws, max_memory_mb=1e-3), 1) == 1
