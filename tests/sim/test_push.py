import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steer.sim  # noqa: F401
from steer.sim.demos import DatasetError, collect_demos, load_demos
from steer.sim.expert import PushExpert, PushExpertConfig
from steer.sim.push import PlanarPushEnv


def test_env_passes_gymnasium_checker():
    check_env(gym.make("steer/PlanarPush-v0").unwrapped, skip_render_check=True)


def test_env_is_fast_enough():
    env = PlanarPushEnv()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, size=(3000, 2)).astype(np.float32)
    # CPU time of this process: the env's own cost per step, not the share of a busy machine it got.
    t = time.process_time()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    sps = len(actions) / (time.process_time() - t)
    assert sps > 1000, f"{sps:.0f} env-steps/s"


def test_reset_is_seeded_and_goals_vary():
    env = PlanarPushEnv()
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    goals = np.array([env.reset(seed=s)[0][8:10] for s in range(50)])
    assert (goals[:, 1] > 0).mean() == pytest.approx(0.5, abs=0.2)


def _success(mirrored_fraction: float, episodes: int = 30) -> float:
    env, expert = PlanarPushEnv(), PushExpert(PushExpertConfig(mirrored_fraction=mirrored_fraction), seed=0)
    wins = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        expert.start_episode()
        while True:
            obs, r, term, trunc, info = env.step(expert.act(obs))
            if term or trunc:
                break
        wins += info["is_success"]
        assert r == float(info["is_success"])
    return wins / episodes


def test_careful_operator_succeeds_and_mirrored_operator_fails():
    assert _success(0.0) >= 0.95
    assert _success(1.0) <= 0.05


def test_nonfinite_action_is_refused():
    env = PlanarPushEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0]))


def test_demos_round_trip_through_minari(tmp_path):
    demos = collect_demos("steer/PlanarPush-v0", PushExpert(seed=5), 12, 1000, tmp_path, progress=False)
    back = load_demos(tmp_path)
    assert back.env_id == "steer/PlanarPush-v0"
    assert len(back.actions) == 12
    for a, b in zip(demos.actions, back.actions):
        np.testing.assert_array_equal(a, b)
    for o, a in zip(back.observations, back.actions):
        assert o.shape == (len(a) + 1, 10)
    np.testing.assert_array_equal(demos.successes, back.successes)
    # Mixed quality: with 12 episodes at a 50 % mirrored share, both kinds show up.
    assert 0 < back.successes.mean() < 1


def test_relative_dataset_path_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    collect_demos("steer/PlanarPush-v0", PushExpert(seed=5), 3, 1000, "runs/data", progress=False)
    assert len(load_demos("runs/data").actions) == 3


def test_missing_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="steer collect"):
        load_demos(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no readable"):
        load_demos(tmp_path / "empty")
