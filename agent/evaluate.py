"""Evaluate chunked policies on held-out seeds, several envs stepped in lockstep.

All envs are queried together at chunk boundaries (one batched policy call), then
each executes its chunk open-loop, exactly as the DSRL wrapper and the robot node do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
from tqdm import tqdm

# Seeds of evaluation episodes start here; demos and RL training use seeds far below it.
EVAL_SEED_BASE = 1_000_000


@dataclass
class EvalResult:
    """Outcome of an evaluation."""

    success_rate: float
    return_mean: float
    episodes: int
    length_mean: float
    successes: np.ndarray
    returns: np.ndarray

    def as_dict(self) -> dict:
        return {"success_rate": self.success_rate, "return_mean": self.return_mean, "episodes": self.episodes,
                "length_mean": self.length_mean}


def evaluate_chunked(env_id: str, act: Callable[[np.ndarray], np.ndarray], episodes: int,
                     seed: int = EVAL_SEED_BASE, num_envs: int = 16, progress: bool = False,
                     desc: str = "eval") -> EvalResult:
    """Run ``episodes`` episodes with seeds ``seed, seed+1, …``; ``act(obs [B, obs_dim]) -> chunks [B, H, A]``."""
    num_envs = max(1, min(num_envs, episodes))
    envs = [gym.make(env_id) for _ in range(num_envs)]
    next_ep = 0
    obs = [None] * num_envs
    ep_ret = np.zeros(num_envs)
    ep_len = np.zeros(num_envs, dtype=int)
    returns, successes, lengths = [], [], []
    active = []
    for i in range(num_envs):
        obs[i], _ = envs[i].reset(seed=seed + next_ep)
        next_ep += 1
        active.append(i)
    bar = tqdm(total=episodes, desc=desc, unit="ep", disable=not progress)
    while active:
        chunks = np.asarray(act(np.stack([obs[i] for i in active])))
        still = []
        for row, i in enumerate(active):
            done = False
            for a in chunks[row]:
                obs[i], r, term, trunc, info = envs[i].step(a)
                ep_ret[i] += r
                ep_len[i] += 1
                if term or trunc:
                    done = True
                    break
            if not done:
                still.append(i)
                continue
            returns.append(ep_ret[i])
            successes.append(bool(info.get("is_success", False)))
            lengths.append(ep_len[i])
            bar.update(1)
            ep_ret[i], ep_len[i] = 0.0, 0
            if next_ep < episodes:
                obs[i], _ = envs[i].reset(seed=seed + next_ep)
                next_ep += 1
                still.append(i)
        active = still
    bar.close()
    for e in envs:
        e.close()
    succ, rets = np.asarray(successes), np.asarray(returns, dtype=float)
    return EvalResult(float(succ.mean()), float(rets.mean()), len(succ), float(np.mean(lengths)), succ, rets)
