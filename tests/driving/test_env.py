"""Gymnasium API: the single env passes check_env, the vector env autoresets in the same step."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steer.driving as d
from tests.driving.conftest import SMALL

CFG = d.DriveEnvConfig(sim=SMALL, obs="both")


def test_registered_env_passes_check_env():
    env = gym.make("steer/Drive-v0", config=CFG)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["bev"].shape == (len(d.BEV_CHANNELS), 64, 64) and obs["bev"].dtype == np.uint8
    assert obs["measurements"].shape == (len(d.MEASUREMENTS),)
    assert obs["vector"].shape == (len(env.unwrapped.venv.metadata["obs_fields"]["vector"]),)
    assert obs["vector"].dtype == np.float32


def test_vector_env_spaces_and_same_step_autoreset():
    env = d.DriveVectorEnv(4, CFG)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    # The last action reaches the critic's inputs only, not the policy's (see MEASUREMENTS).
    probe = np.array([[0.3, -0.5], [0.1, 0.2], [0.0, 0.0], [-0.2, 0.4]], np.float32)
    obs, *_ = env.step(probe)
    np.testing.assert_array_equal(obs["value_inputs"][:, 4:6], probe)
    assert "last_steer" not in d.MEASUREMENTS and not any("steer" in f for f in env.metadata["obs_fields"]["vector"])
    obs, _ = env.reset(seed=0)
    steer_hard = np.tile(np.array([[0.15, 1.0]], np.float32), (4, 1))
    steer_hard[1:] = [0.0, 0.0]
    for k in range(300):
        obs, rew, term, trunc, info = env.step(steer_hard)
        if term[0]:
            break
    assert term[0] and (info["off_road"][0] or info["collision_vehicle"][0] or info["route_deviation"][0])
    assert info["_final_obs"][0] and not info["_final_obs"][1:].any()
    assert info["final_obs"]["bev"].shape[0] == 1
    assert info["episode_length"][0] == k + 1
    # the returned observation is the first of the new episode: full time budget left
    # (speed 0 and a zero last action, which only the critic sees)
    assert np.isclose(obs["value_inputs"][0, 0], 1.0) and obs["measurements"][0, 0] == 0.0
    assert (obs["value_inputs"][0, 4:6] == 0.0).all() and d.VALUE_INPUTS[4:6] == ("last_steer", "last_accel")
    assert env.sim.steps[0] == 0 and env.sim.steps[1] == k + 1
    for key in d.INFRACTIONS + ("route_completion", "distance_driven"):
        assert info[key].shape == (4,)


def test_vector_env_is_reproducible_and_rewards_selectable():
    outs = []
    for reward in ("carl", "carl", "roach"):
        env = d.DriveVectorEnv(3, CFG, reward=reward)
        env.reset(seed=5)
        expert = d.ExpertDriver(env.sim)
        total = np.zeros(3)
        for _ in range(60):
            obs, r, *_ = env.step(expert.act())
            total += r
        outs.append((obs["bev"].copy(), total))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.allclose(outs[0][1], outs[1][1])
    assert not np.allclose(outs[0][1], outs[2][1])
    assert outs[0][1].min() > 0  # the expert earns progress


def test_unknown_reward_is_a_user_error():
    with pytest.raises(d.env.DriveConfigError) as e:
        d.DriveVectorEnv(1, CFG, reward="dense")
    assert e.value.user_facing


def test_no_bev_observation():
    env = d.DriveVectorEnv(2, d.DriveEnvConfig(sim=SMALL, obs="none"))
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"measurements", "value_inputs"}
    assert set(d.DriveVectorEnv(2, d.DriveEnvConfig(sim=SMALL)).reset(seed=0)[0]) == {"vector", "measurements",
                                                                                    "value_inputs"}
    with pytest.raises(d.env.DriveConfigError, match="observation"):
        d.DriveVectorEnv(1, d.DriveEnvConfig(sim=SMALL, obs="lidar"))


def test_light_start_curriculum_starts_before_a_stop_line_often_red():
    from steer.driving.evaluation import heldout_env_config

    cfg = d.DriveEnvConfig(sim=SMALL, obs="vector", light_start=1.0, light_start_red=1.0, light_start_standing=0.5)
    env = d.DriveVectorEnv(64, cfg)
    obs, _ = env.reset(seed=3)
    names = env.vector.field_names()[env.vector.slices["junction"]]
    light = obs["vector"][:, env.vector.slices["junction"]]
    col = {n.split(".")[1]: i for i, n in enumerate(names)}
    has_line = np.isfinite(env.sim.pool.stop_s[env.sim.route]).any(1)
    assert has_line.mean() > 0.5
    # bumper 2-40 m before a stop line (its centre projection may snap back to the route point before)
    dist = light[has_line, col["distance"]] * 50.0
    assert (dist > 1.0).all() and (dist < 42.0).all()
    signalled = has_line & (light[:, col["none"]] == 0) & (light[:, col["stop"]] == 0) & (light[:, col["yield"]] == 0)
    assert signalled.sum() >= 5 and light[signalled, col["red"]].mean() > 0.9
    v = obs["measurements"][has_line, 0] * 10.0
    assert 0.3 < (v == 0).mean() < 0.7 and (v ** 2 <= 2 * 4.0 * (dist + 1.0) + 1e-6).all()
    # routes without a stop line start at their start, standing; evaluation never uses the curriculum
    assert (env.sim.s[~has_line] == 0).all()
    assert heldout_env_config(cfg).light_start == 0.0
    # autoreset draws curriculum starts too
    for _ in range(5):
        obs, *_ = env.step(np.tile([[0.0, -1.0]], (64, 1)).astype(np.float32))
    env.sim.t[:] = env.sim.time_limit  # every episode times out on the next step
    obs, _, term, _, _ = env.step(np.zeros((64, 2), np.float32))
    assert term.all() and (env.sim.s > 0).mean() > 0.4
