"""The DSRL MDP: the action is the diffusion policy's initial noise.

``LatentNoiseEnv`` wraps a task env and a frozen diffusion policy. Its action is the
latent noise w ∈ [-b, b]^(chunk_len × action_dim); a step runs the deterministic
DDIM sampler from w, executes the whole action chunk in the task and returns the
sum of its rewards, each minus ``reward_offset`` (the official code's Robomimic setting,
offset 1, turns a 0/1 success reward into -1 per step until success: a time penalty the
critic can learn from long before the first success is common). Its observation is the task observation scaled by the policy's
own min-max statistics, so the latent actor sees well-conditioned inputs.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from steer.agent.bc import base_latents
from steer.agent.diffusion import DiffusionPolicy

SafeSet = Callable[[np.ndarray, np.ndarray], bool]
"""``safe_set(observation, action_chunk [H, A]) -> bool``: True when executing the chunk from the
observation keeps the system inside its safe set."""


class LatentNoiseEnv(gym.Wrapper):
    """Gymnasium wrapper whose action space is the latent noise of ``policy``.

    With a ``safe_set``, a chunk that would leave the safe set is replaced by the BC baseline's chunk
    (its noise from :func:`~steer.agent.bc.base_latents`); ``info["executed_w"]`` then holds the latent
    that ran.
    """

    def __init__(self, env: gym.Env, policy: DiffusionPolicy, latent_noise_bound: float = 1.5,
                 reward_offset: float = 0.0, safe_set: SafeSet | None = None, fallback_seed: int = 0):
        super().__init__(env)
        self.safe_set = safe_set
        self.fallbacks = 0
        self._fallback_rng = np.random.default_rng(fallback_seed)
        if latent_noise_bound <= 0:
            raise ValueError(f"latent_noise_bound must be positive, got {latent_noise_bound}")
        self.policy = policy
        self.chunk_len, self.action_dim = policy.cfg.chunk_len, policy.cfg.action_dim
        self.latent_noise_bound = float(latent_noise_bound)
        self.reward_offset = float(reward_offset)
        b = self.latent_noise_bound
        self.action_space = gym.spaces.Box(-b, b, (self.chunk_len * self.action_dim,), dtype=np.float32)
        obs_dim = policy.cfg.obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32)
        self._raw_obs: np.ndarray | None = None

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.policy.obs_norm.normalize(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    def decode(self, raw_obs: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Action chunk [H, A] the frozen policy produces for latent ``w`` (clipped to ±b)."""
        w = np.clip(np.asarray(w, dtype=np.float32), -self.latent_noise_bound, self.latent_noise_bound)
        with torch.no_grad():
            chunk = self.policy.sample(torch.as_tensor(raw_obs, dtype=torch.float32)[None],
                                       torch.from_numpy(w.reshape(1, self.chunk_len, self.action_dim)))
        return chunk[0].numpy()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._raw_obs = obs
        return self.normalize_obs(obs), info

    def step(self, w):
        w = np.clip(np.asarray(w, dtype=np.float32), -self.latent_noise_bound, self.latent_noise_bound)
        chunk = self.decode(self._raw_obs, w)
        fell_back = False
        if self.safe_set is not None and not self.safe_set(self._raw_obs, chunk):
            # Outside the safe set: run the BC baseline's chunk instead.
            w = base_latents(self.policy, self._fallback_rng, 1)[0]
            chunk = self.decode(self._raw_obs, w)
            self.fallbacks += 1
            fell_back = True
        total, executed = 0.0, 0
        term = trunc = False
        info: dict = {}
        for a in chunk:
            obs, r, term, trunc, info = self.env.step(a)
            total += float(r) - self.reward_offset
            executed += 1
            if term or trunc:
                break
        self._raw_obs = obs
        info = dict(info)
        info["executed_actions"] = chunk[:executed]
        info["chunk_steps"] = executed
        if self.safe_set is not None:
            # The latent that actually ran (the learner must store this one) and the cumulative count.
            info["executed_w"] = w
            info["latent_fallback"] = fell_back
            info["safety/fallbacks"] = self.fallbacks
        return self.normalize_obs(obs), total, term, trunc, info
