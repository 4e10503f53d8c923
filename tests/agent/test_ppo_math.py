"""PPO math: the Beta policy against torch.distributions, GAE against hand-computed values, the
losses on a case small enough to check by hand, and the driving score."""

import math

import numpy as np
import pytest
import torch

from steer.agent.ppo import Batch, EpisodeStats, gae, normalize_advantages, ppo_update, value_loss
from steer.agent.ppo_config import NetConfig, PPOConfig
from steer.agent.ppo_nets import CarlActorCritic, beta_entropy, beta_log_prob, beta_mean, beta_params, sample_beta
from steer.driving.score import INFRACTION_COEFFICIENTS, driving_score, format_table, summarize


def test_beta_log_prob_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(500, 4, generator=g, dtype=torch.float64) * 3
    alpha, beta = beta_params(raw)
    assert alpha.min() > 1.0 and beta.min() > 1.0  # softplus + 1: unimodal, no mass piled at the bounds
    ref = torch.distributions.Beta(alpha, beta)
    x = torch.rand(500, 2, generator=g, dtype=torch.float64).clamp(0.01, 0.99)
    torch.testing.assert_close(beta_log_prob(x, alpha, beta), ref.log_prob(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(beta_entropy(alpha, beta), ref.entropy(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(beta_mean(alpha, beta), ref.mean)


def test_beta_params_are_softplus_plus_one():
    alpha, beta = beta_params(torch.tensor([[0.0, 2.0]]))
    assert alpha.item() == pytest.approx(math.log(2.0) + 1.0)
    assert beta.item() == pytest.approx(math.log1p(math.exp(2.0)) + 1.0)


def test_beta_samples_have_the_distributions_mean_and_stay_inside():
    torch.manual_seed(0)
    alpha = torch.full((200_000,), 2.0)
    beta = torch.full((200_000,), 5.0)
    x = sample_beta(alpha, beta)
    assert 0.0 < x.min() and x.max() < 1.0
    assert x.mean().item() == pytest.approx(2.0 / 7.0, abs=3e-3)
    assert x.var().item() == pytest.approx(2 * 5 / (7**2 * 8), rel=0.03)


def test_gae_matches_hand_computed_values():
    gamma, lam = 0.9, 0.8
    # One env, 3 steps, the episode ends after step 1; values of the next episode must not leak back.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    last_value = torch.tensor([2.0])
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam)
    d2 = 3.0 + 0.9 * 2.0 - 1.5            # 3.3
    d1 = 2.0 - 1.0                        # 1.0 (no bootstrap across the episode end)
    d0 = 1.0 + 0.9 * 1.0 - 0.5            # 1.4
    a2, a1 = d2, d1
    a0 = d0 + gamma * lam * a1            # 1.4 + 0.72 = 2.12
    torch.testing.assert_close(adv[:, 0], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(ret, adv + values)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    torch.manual_seed(0)
    r = torch.rand(6, 3)
    v = torch.rand(6, 3)
    last = torch.rand(3)
    adv, ret = gae(r, v, torch.zeros(6, 3), last, 0.95, 1.0)
    expect = last.clone()
    for t in reversed(range(6)):
        expect = r[t] + 0.95 * expect
        torch.testing.assert_close(ret[t], expect)


def test_advantage_normalization_uses_unbiased_std():
    a = torch.tensor([1.0, 2.0, 4.0, 9.0])
    torch.testing.assert_close(normalize_advantages(a), (a - a.mean()) / (a.std() + 1e-8))


def _tiny_model():
    torch.manual_seed(0)
    return CarlActorCritic({"bev": (2, 16, 16), "measurements": (4,), "value_inputs": (4,)}, 2, NetConfig(cnn_channels=(4, 8), bev_features=16,
                                                          measurement_features=8, hidden=16, value_hidden=8))


def _batch(model, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    bev = torch.randint(0, 256, (n, 2, 16, 16), generator=g, dtype=torch.uint8)
    meas, vin = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    with torch.no_grad():
        obs = {"bev": bev, "measurements": meas, "value_inputs": vin}
        x, logp, _, value = model(obs)
    return Batch(obs, x, logp, torch.randn(n, generator=g), value + torch.randn(n, generator=g), value)


def test_ppo_loss_of_the_first_step_is_the_value_and_entropy_terms():
    """At the rollout's own parameters ratio = 1: the policy loss is -mean(normalized A) = 0."""
    model = _tiny_model()
    batch = _batch(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = ppo_update(model, opt, batch, [torch.arange(32)], PPOConfig())
    assert stats["losses/policy_loss"] == pytest.approx(0.0, abs=1e-6)
    assert stats["losses/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    expected_value_loss = 0.5 * ((batch.returns - batch.values) ** 2).mean().item()
    assert stats["losses/value_loss"] == pytest.approx(expected_value_loss, rel=1e-5)
    assert stats["losses/clipfrac"] == 0.0


def test_value_clipping_by_hand():
    old = torch.tensor([0.0, 0.0, 0.0])
    new = torch.tensor([0.5, 0.05, -0.5], requires_grad=True)
    ret = torch.tensor([10.0, 1.0, 0.0])
    loss = value_loss(new, old, ret, 0.1)
    # Per sample: max((new - R)^2, (clip(new) - R)^2) = max(90.25, 98.01), max(0.9025, 0.9025), max(0.25, 0.01).
    assert loss.item() == pytest.approx(0.5 * (98.01 + 0.9025 + 0.25) / 3)
    loss.backward()
    # Sample 0 sits on the clipped branch: no gradient pulls the value further than the clip allows.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, (0.05 - 1.0) / 3, -0.5 / 3]))
    assert value_loss(new, old, ret, None).item() == pytest.approx(0.5 * (90.25 + 0.9025 + 0.25) / 3)


def test_grad_norm_is_clipped():
    model = _tiny_model()
    batch = _batch(model)._replace(advantages=torch.randn(32) * 100)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    s = ppo_update(model, opt, batch, [torch.arange(32)], PPOConfig(max_grad_norm=0.01, norm_adv=False))
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert s["losses/grad_norm"] > 0.01  # the raw norm was larger ...
    assert step.item() == pytest.approx(0.01, rel=1e-3)  # ... and SGD moved by exactly the clipped norm


def test_driving_score_multiplies_the_leaderboard_coefficients():
    rc = np.array([1.0, 0.8, 0.5, 0.9])
    infr = {"collision_vehicle": np.array([0, 1, 0, 0]), "red_light": np.array([0, 0, 2, 0]),
            "collision_pedestrian": np.array([0, 0, 0, 1]), "stop_sign": np.array([0, 0, 0, 1]),
            "off_road": np.array([1, 1, 1, 1])}
    ds = driving_score(rc, infr)
    np.testing.assert_allclose(ds, [1.0, 0.8 * 0.6, 0.5 * 0.7**2, 0.9 * 0.5 * 0.8])
    assert INFRACTION_COEFFICIENTS == {"collision_pedestrian": 0.50, "collision_vehicle": 0.60,
                                       "collision_static": 0.65, "red_light": 0.70, "stop_sign": 0.80}


def test_episode_stats_count_only_finished_episodes_and_rate_per_km():
    from steer.driving.simulator import INFRACTIONS

    n = 4
    rc = np.array([0.5, 1.0, 0.2, 0.9])
    infos = {"route_completion": rc, "episode_return": np.array([50.0, 100, 20, 90]),
             "episode_length": np.array([10, 20, 5, 30]), "distance_driven": np.array([500.0, 1000, 100, 900]),
             **{k: np.zeros(n, bool) for k in INFRACTIONS}}
    infos["collision_vehicle"] = np.array([True, False, False, True])
    infos["driving_score"] = driving_score(rc, infos)
    done = np.array([True, True, False, False])
    st = EpisodeStats({"infractions": INFRACTIONS, "episode_metrics": ("route_completion", "driving_score"),
                       "distance_info": "distance_driven"})
    st.add(infos, done)
    s = st.summary()
    assert s["episodes"] == 2
    assert s["route_completion"] == pytest.approx(0.75)
    assert s["driving_score"] == pytest.approx((0.5 * 0.6 + 1.0) / 2)
    assert s["infractions/collision_vehicle_per_km"] == pytest.approx(1 / 1.5)
    table = format_table({"policy": s})
    assert "route completion %" in table and "75.0" in table
    assert summarize({"episodes": 0})["episodes"] == 0


def test_per_km_rates_without_distance_are_zero_or_missing_not_a_billion():
    """A car that crashed where it started drove 0 km: its rate is undefined (None, a dash in the
    table, left out of the logged scalars), and a clean standstill is 0 per km."""
    from steer.driving.score import per_km
    from steer.driving.simulator import INFRACTIONS

    rates = per_km({"collision_vehicle": 1.0, "red_light": 0.0}, 0.0)
    assert rates == {"infractions/collision_vehicle_per_km": None, "infractions/red_light_per_km": 0.0,
                     "infractions/total_per_km": None}
    assert per_km({"red_light": 2.0}, 0.5)["infractions/red_light_per_km"] == pytest.approx(4.0)
    sums = {"episodes": 1, "return": 0.0, "length": 3, "route_completion": 0.0, "driving_score": 0.0,
            "distance_m": 0.0, **{k: 0.0 for k in INFRACTIONS}, "collision_static": 1.0}
    s = summarize(sums)
    assert s["infractions/collision_static_per_km"] is None and s["infractions/red_light_per_km"] == 0.0
    row = [line for line in format_table({"policy": s}).splitlines() if line.startswith("collision_static")][0]
    assert row.split()[-1] == "-"
    infos = {"route_completion": np.zeros(1), "driving_score": np.zeros(1), "episode_return": np.zeros(1),
             "episode_length": np.ones(1), "distance_driven": np.zeros(1),
             **{k: np.zeros(1, bool) for k in INFRACTIONS}}
    infos["collision_static"] = np.ones(1, bool)
    st = EpisodeStats({"infractions": INFRACTIONS, "episode_metrics": ("route_completion", "driving_score"),
                       "distance_info": "distance_driven"})
    st.add(infos, np.ones(1, bool))
    logged = st.summary()
    assert "infractions/collision_static_per_km" not in logged and logged["infractions/red_light_per_km"] == 0.0


def test_vector_network_is_an_mlp_whose_actor_ignores_the_value_only_inputs():
    shapes = {"measurements": (4,), "value_inputs": (4,), "vector": (30,)}
    net = NetConfig(vector_layers=(32,), hidden=16, value_hidden=8)
    torch.manual_seed(0)
    model = CarlActorCritic(shapes, 2, net)
    assert model.bev is None and model.flat_keys == ("measurements", "vector")
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    # Parameters: MLP 34->32, joint 32->16, policy 16->4, value (16+4)->8->1.
    assert sum(p.numel() for p in model.parameters()) == (34 * 32 + 32) + (32 * 16 + 16) + (16 * 4 + 4) + (
        20 * 8 + 8) + (8 + 1)
    g = torch.Generator().manual_seed(1)
    obs = {k: torch.randn(5, s[0], generator=g) for k, s in shapes.items()}
    x, logp, ent, value = model(obs)
    assert x.shape == (5, 2) and logp.shape == ent.shape == value.shape == (5,)
    other = {**obs, "value_inputs": obs["value_inputs"] + 3.0}
    torch.testing.assert_close(model.act(obs), model.act(other))  # the actor never sees them ...
    assert not torch.allclose(model(obs, x)[3], model(other, x)[3])  # ... the critic does
    assert not torch.allclose(model.act(obs), model.act({**obs, "vector": obs["vector"] + 1.0}))
