"""PPO-Lag: the multiplier's update, the combined advantage, the cost critic, and the trainer with it."""

import dataclasses

import pytest
import torch
from ppo_worlds import tiny_ppo_config

from steer.agent.checkpoint import load_checkpoint
from steer.agent.ppo import (CHECKPOINT, Batch, PPOConfigError, lagrangian_advantages, load_policy, ppo_update,
                             train_ppo, update_multiplier)
from steer.agent.ppo_config import LagrangianConfig, NetConfig, PPOConfig
from steer.agent.ppo_nets import CarlActorCritic, beta_mean
from steer.agent.runlog import MemoryLog


def test_multiplier_ascends_on_excess_cost_and_is_projected_at_zero():
    lag = LagrangianConfig(enabled=True, cost_limit=0.1, lambda_lr=0.05)
    assert update_multiplier(0.5, 0.3, lag) == pytest.approx(0.51)
    assert update_multiplier(0.5, 0.0, lag) == pytest.approx(0.495)
    assert update_multiplier(0.001, 0.0, lag) == 0.0


def test_combined_advantage_by_hand():
    adv = torch.tensor([1.0, -1.0, 0.5])
    cost = torch.tensor([3.0, 1.0, 2.0])  # centred: [1, -1, 0]
    torch.testing.assert_close(lagrangian_advantages(adv, cost, 0.0), adv)
    torch.testing.assert_close(lagrangian_advantages(adv, cost, 1.0), torch.tensor([0.0, 0.0, 0.25]))
    torch.testing.assert_close(lagrangian_advantages(adv, cost, 3.0), torch.tensor([-0.5, 0.5, 0.125]))


def _model():
    torch.manual_seed(0)
    return CarlActorCritic({"bev": (2, 16, 16), "measurements": (4,), "value_inputs": (4,)}, 2, NetConfig(cnn_channels=(4, 8), bev_features=16,
                                                          measurement_features=8, hidden=16, value_hidden=8),
                           cost_head=True)


def _one_state_batch(model, n=64):
    """n samples of one observation: half with actions near 0.2, half near 0.8; the high ones cost."""
    g = torch.Generator().manual_seed(1)
    bev = torch.randint(0, 256, (1, 2, 16, 16), generator=g, dtype=torch.uint8).expand(n, -1, -1, -1).clone()
    meas, vin = torch.randn(1, 4, generator=g).expand(n, -1), torch.randn(1, 4, generator=g).expand(n, -1)
    x = torch.cat([torch.full((n // 2, 2), 0.2), torch.full((n // 2, 2), 0.8)])
    with torch.no_grad():
        obs = {"bev": bev, "measurements": meas, "value_inputs": vin}
        _, logp, _, value = model(obs, x)
    cost_adv = torch.cat([torch.zeros(n // 2), torch.full((n // 2,), 2.0)])
    return Batch(obs, x, logp, torch.ones(n), value[:, 0] + 1.0, value[:, 0],
                 cost_adv, value[:, 1] + 0.5, value[:, 1])


def test_ppo_lag_loss_at_the_rollout_parameters_and_the_cost_critic():
    model = _model()
    batch = _one_state_batch(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = PPOConfig(norm_adv=False)
    s = ppo_update(model, opt, batch, [torch.arange(64)], cfg, lagrange=3.0)
    # ratio = 1: policy loss = -mean((A_r - λ·centred A_c) / (1 + λ)) = -(1 - 3·0) / 4.
    assert s["losses/policy_loss"] == pytest.approx(-0.25, abs=1e-6)
    assert s["losses/cost_value_loss"] == pytest.approx(0.5 * 0.25, rel=1e-5)
    assert s["losses/value_loss"] == pytest.approx(0.5, rel=1e-5)


def test_a_large_multiplier_moves_the_policy_away_from_costly_actions():
    means = {}
    for lam in (0.0, 10.0):
        model = _model()
        batch = _one_state_batch(model)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(30):
            ppo_update(model, opt, batch, [torch.arange(64)], PPOConfig(norm_adv=False, clip_coef=10.0), lagrange=lam)
        with torch.no_grad():
            a, b = model.distribution(model.features({k: v[:1] for k, v in batch.obs.items()}))
        means[lam] = beta_mean(a, b).mean().item()
    # Without the penalty both modes are rewarded alike; with it the costly (0.8) actions are pushed down.
    assert means[10.0] < means[0.0] - 0.05, means


def test_trainer_with_the_lagrangian_updates_lambda_from_episode_costs_and_checkpoints_it(tmp_path):
    torch.set_num_threads(1)
    lag = LagrangianConfig(enabled=True, cost_limit=0.0, lambda_lr=0.5, lambda_init=0.2,
                           cost_infractions=("blocked", "timeout", "collision_vehicle", "off_road", "route_deviation"))
    base = tiny_ppo_config()
    # A short time budget (about 5.5 s for a 50 m route) so that episodes end, costly, within the rollouts.
    sim = dataclasses.replace(base.env.sim, timeout_base_s=0.5, timeout_speed=10.0)
    cfg = tiny_ppo_config(total_timesteps=32 * 32 * 4, lagrangian=lag, env=dataclasses.replace(base.env, sim=sim))
    log = MemoryLog(tmp_path)
    res = train_ppo(cfg, log)
    costs = [r.get("lagrangian/episode_cost") for r in log.records]
    lams = [r["lagrangian/lambda"] for r in log.records]
    assert all("losses/cost_value_loss" in r for r in log.records)
    # Replaying the logged episode costs through the update gives the logged multipliers.
    lam = 0.2
    for c, logged in zip(costs, lams):
        if c is not None:
            lam = max(0.0, lam + 0.5 * (c - 0.0))
        assert logged == pytest.approx(lam)
    assert any(c for c in costs if c is not None), "no costly episode ended: the test proves nothing"
    assert res.lagrange == pytest.approx(lams[-1]) and res.lagrange > 0.2
    _, meta = load_checkpoint(tmp_path, CHECKPOINT)
    assert meta["lagrange"] == pytest.approx(res.lagrange)
    model, loaded, _ = load_policy(tmp_path)
    assert loaded.lagrangian == lag and model.cost_head is not None
    # Resuming with no updates keeps the multiplier.
    assert train_ppo(cfg, MemoryLog(tmp_path), resume=True, max_updates=0).lagrange == pytest.approx(res.lagrange)


def test_unknown_cost_infraction_is_a_user_facing_error(tmp_path):
    cfg = tiny_ppo_config(lagrangian=LagrangianConfig(enabled=True, cost_infractions=("speeding",)))
    with pytest.raises(PPOConfigError, match="speeding"):
        train_ppo(cfg, MemoryLog(tmp_path))
