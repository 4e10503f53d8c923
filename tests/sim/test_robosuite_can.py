"""robosuite PickPlaceCan: the env's interface and seeding, the expert's two modes, and a demonstration round trip."""

import gymnasium as gym
import numpy as np
import pytest

import steer.sim  # noqa: F401
from steer.sim.robosuite_can import OBS_NAMES, CanEnv, CanExpert

CAN_Z = slice(11, 12)


@pytest.fixture(scope="module")
def env():
    e = CanEnv()
    yield e
    e.close()


def test_obs_names_and_seeded_reset(env):
    a, info = env.reset(seed=3)
    assert a.dtype == np.float32 and a.shape == (len(OBS_NAMES),) == env.observation_space.shape == (19,)
    assert env.obs_names == OBS_NAMES and env.action_space.shape == (7,) and info["is_success"] is False
    # can_rel_eef is can_pos - eef_pos, in the world frame
    np.testing.assert_allclose(a[16:19], a[9:12] - a[0:3], atol=1e-6)
    env.step(env.action_space.sample())
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.linalg.norm(a[9:11] - c[9:11]) > 1e-3  # the can's place depends on the seed
    assert env.max_steps == 250 and env.control_rate_hz == 20.0


def _until_carry(env, expert, seed, cap=80):
    """Run the expert until it starts carrying; the can's height then tells whether the grasp held."""
    expert.begin_episode(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(cap):
        obs, *_ = env.step(expert.act(obs))
        if expert.phase == CanExpert.CARRY:
            break
    assert expert.phase == CanExpert.CARRY, f"the expert did not reach the carry phase in {cap} steps"
    return float(obs[CAN_Z][0])


def test_offset_grasp_usually_drops_the_can_and_careful_grasp_lifts_it(env):
    # the can rests with its centre at ~0.86 m; held at carry height it is ~1.0 m
    careful = [_until_carry(env, CanExpert(p_offset=0.0), s) for s in range(3)]
    offset = [_until_carry(env, CanExpert(p_offset=1.0), s) for s in range(3)]
    assert sum(z > 0.93 for z in careful) == 3, careful
    assert sum(z > 0.93 for z in offset) <= 1, offset


def test_mode_choice_reproducible():
    ex = CanExpert()
    modes = [ex.begin_episode(s) for s in range(40)]
    assert modes == [ex.begin_episode(s) for s in range(40)]
    assert 10 <= modes.count("offset") <= 30


def test_collect_a_careful_demonstration_of_the_registered_task(tmp_path):
    from steer.ops.train_cmd import CollectConfig, collect
    from steer.sim.demos import load_demos

    assert collect(CollectConfig(task="steer/Can-v0", out=tmp_path, episodes=1, mirrored_fraction=0.0)) == 0
    demos = load_demos(tmp_path)
    assert demos.env_id == "steer/Can-v0" and demos.successes.tolist() == [True]
    (obs,), (act,) = demos.observations, demos.actions
    assert obs.shape == (len(act) + 1, 19) and act.shape[1] == 7 and len(act) < 250
    # the success step ended the episode: the can lies in the target quadrant of the right bin
    assert obs[-1, 10] > 0.28 and 0.8 < obs[-1, 11] < 0.9
    env = gym.make("steer/Can-v0")
    assert env.unwrapped.target_xy == pytest.approx([0.1975, 0.4025])
    env.close()


def test_collect_names_the_tasks_it_can_demonstrate(tmp_path):
    from steer.ops.run import RunError
    from steer.ops.train_cmd import CollectConfig, collect

    with pytest.raises(RunError, match="steer/Can-v0"):
        collect(CollectConfig(task="steer/Bogus-v0", out=tmp_path))
    assert not any(tmp_path.iterdir())
