"""robosuite Lift: the env's interface and seeding, and the expert's two modes."""

import gymnasium as gym
import numpy as np
import pytest

import steer.sim  # noqa: F401
from steer.sim.robosuite_lift import OBS_NAMES, LiftEnv, LiftExpert


@pytest.fixture(scope="module")
def env():
    e = LiftEnv(max_steps=120)
    yield e
    e.close()


def _rollout(env, expert, seed):
    expert.begin_episode(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(env.max_steps):
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            break
    return bool(info["is_success"]), reward, terminated, truncated


def test_obs_shape_and_names(env):
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32
    assert obs.shape == (len(OBS_NAMES),) == env.observation_space.shape
    assert env.obs_names == OBS_NAMES
    assert env.action_space.shape == (7,)
    assert info["is_success"] is False


def test_same_seed_same_initial_obs(env):
    a, _ = env.reset(seed=11)
    env.step(env.action_space.sample())
    b, _ = env.reset(seed=11)
    c, _ = env.reset(seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[9:12], c[9:12])  # cube position depends on the seed


@pytest.fixture(scope="module")
def outcomes(env):
    """(success, reward, terminated, truncated) of 6 careful and 6 offset episodes, 70 steps at most."""
    env.max_steps = 70  # careful episodes succeed in ~45 steps; a short cap keeps the failing ones cheap
    out = {mode: [_rollout(env, LiftExpert(p_offset=p, obs_names=env.obs_names), s) for s in range(6)]
           for mode, p in (("careful", 0.0), ("offset", 1.0))}
    env.max_steps = 120
    return out


def test_careful_mode_succeeds(outcomes):
    results = outcomes["careful"]
    assert sum(r[0] for r in results) >= 5, results
    for success, reward, terminated, truncated in results:
        if success:
            assert terminated and not truncated and reward == 1.0


def test_offset_mode_fails_more_often(outcomes):
    assert LiftExpert(p_offset=1.0).begin_episode(0) == "offset"
    wins_careful = sum(r[0] for r in outcomes["careful"])
    wins_offset = sum(r[0] for r in outcomes["offset"])
    assert wins_offset <= 2, outcomes["offset"]
    assert wins_offset <= wins_careful - 3


def test_mode_choice_reproducible():
    ex = LiftExpert()
    modes = [ex.begin_episode(s) for s in range(40)]
    assert modes == [ex.begin_episode(s) for s in range(40)]
    assert 10 <= modes.count("offset") <= 30


def test_registered_env_and_start_episode_draw_from_the_experts_seed():
    env = gym.make("steer/Lift-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (len(OBS_NAMES),)
    env.close()
    a, b = LiftExpert(seed=5), LiftExpert(seed=5)
    assert [a.start_episode() for _ in range(20)] == [b.start_episode() for _ in range(20)]
