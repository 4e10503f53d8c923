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


def test_latent_actor_reproduces_sb3_sacs_deterministic_action(tiny_bc):
    # The exported latent actor is SB3's actor with its weights copied: both must give the same w.
    from steer.agent.dsrl import DSRLConfig
    from steer.agent.dsrl.sac import build_sac, latent_actor_from_sb3, make_latent_vec_env

    policy, _ = tiny_bc
    cfg = DSRLConfig(num_envs=1, latent_noise_bound=2.0, hidden_dim=32, num_layers=2, buffer_size=100)
    model = build_sac(policy, make_latent_vec_env("steer/PlanarPush-v0", policy, cfg), cfg)
    with torch.no_grad():  # move the weights off their initialization, so that tanh saturates somewhere
        for p in model.actor.parameters():
            p.add_(torch.randn_like(p))
    actor = latent_actor_from_sb3(model, cfg, policy)
    assert isinstance(actor, LatentActor) and actor.cfg == LatentActorConfig(10, 8, 32, 2, True, 2.0)
    obs = np.random.default_rng(0).uniform(-1.2, 1.2, (64, 10)).astype(np.float32)
    sb3_w, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        ours = actor(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(ours, sb3_w, atol=1e-5)
    assert np.abs(ours).max() > 1.5  # the bound 2 is applied, not 1 or the default 1.5
