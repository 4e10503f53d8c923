import gymnasium as gym
import numpy as np
import torch

import steer.sim  # noqa: F401
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig
from steer.agent.dsrl.latent_env import LatentNoiseEnv


def test_latent_action_space_and_clipping(tiny_bc):
    policy, _ = tiny_bc
    env = LatentNoiseEnv(gym.make("steer/PlanarPush-v0"), policy, latent_noise_bound=1.5)
    assert env.action_space.shape == (8,)
    assert np.all(env.action_space.low == -1.5) and np.all(env.action_space.high == 1.5)
    obs, _ = env.reset(seed=0)
    assert np.all(np.abs(obs) <= 1.5)  # normalized by the policy's statistics
    raw = env.unwrapped._obs()
    big = np.full(8, 40.0, np.float32)
    np.testing.assert_array_equal(env.decode(raw, big), env.decode(raw, np.full(8, 1.5, np.float32)))


def test_latent_step_executes_a_whole_chunk_and_sums_rewards(tiny_bc):
    policy, _ = tiny_bc
    env = LatentNoiseEnv(gym.make("steer/PlanarPush-v0"), policy, 1.5, reward_offset=1.0)
    env.reset(seed=1)
    _, r, term, trunc, info = env.step(np.zeros(8, np.float32))
    assert info["chunk_steps"] == 4 and info["executed_actions"].shape == (4, 2)
    assert env.unwrapped._steps == 4
    assert r == -4.0  # no success in the first chunk: four steps of -1
    # The executed actions are exactly what the frozen policy decodes from w.
    env2 = LatentNoiseEnv(gym.make("steer/PlanarPush-v0"), policy, 1.5)
    obs_raw = env2.reset(seed=1) and env2.unwrapped._obs()
    np.testing.assert_allclose(env2.decode(obs_raw, np.zeros(8, np.float32)), info["executed_actions"], atol=1e-6)


def test_latent_actor_output_is_bounded():
    actor = LatentActor(LatentActorConfig(10, 8, 32, 2, True, 1.5))
    w = actor(torch.randn(100, 10) * 1000)
    assert w.shape == (100, 8)
    assert torch.all(w.abs() <= 1.5)
