"""Benchmark: end-to-end PPO env-steps/s (rollout + update) of our CaRL trainer vs stable-baselines3.

Both train the same network (our CNN over the BEV + measurement MLP, the joint layer, a 128-unit
value layer) on the same driving env (64 x 64 BEV, CaRL reward) with the same rollout length,
minibatch (1,024), 3 epochs and PPO settings, on one torch thread each. SB3 sees the env through a
thin ``VecEnv`` adapter; it has no Beta distribution, so it uses its diagonal Gaussian (same cost
class). For 64, 256 and 1,024 envs, ours and SB3 alternate, several repeats; each measurement is
two PPO updates after construction. Figures are medians. Writes ``bench/results/ppo_throughput.json``.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (64, 256, 1024)
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ROLLOUT_STEPS = 16
"""Steps per env per rollout (SB3 stores observations as float32: 1,024 envs x 16 steps of BEV is 2 GB)."""
MINIBATCH = 1024
UPDATES = 2


def ppo_config(n: int):
    from steer.agent.ppo_config import PPOConfig

    return PPOConfig(num_envs=n, num_steps=ROLLOUT_STEPS, minibatch_size=MINIBATCH, torch_threads=1,
                     total_timesteps=10 * n * ROLLOUT_STEPS, checkpoint_every=10**9)


def ours(n: int) -> float:
    """Env-steps/s of :func:`steer.agent.ppo.train_ppo` over ``UPDATES`` updates."""
    from steer.agent.ppo import train_ppo
    from steer.agent.runlog import MemoryLog

    res = train_ppo(ppo_config(n), MemoryLog(), max_updates=UPDATES)
    return res.sps


def _sb3_classes():
    import gymnasium as gym
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import VecEnv

    from steer.agent.ppo_nets import CarlActorCritic

    class DriveVecEnvAdapter(VecEnv):
        """Our native vector env behind SB3's VecEnv API (infos as a list of dicts, terminal observations)."""

        def __init__(self, env):
            self.env = env
            super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
            self._actions = None

        def reset(self):
            obs, _ = self.env.reset(seed=0)
            return obs

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            obs, rew, term, trunc, infos = self.env.step(self._actions)
            done = term | trunc
            out = [{} for _ in range(self.num_envs)]
            idx = np.flatnonzero(done)
            for row, e in enumerate(idx):
                out[e]["terminal_observation"] = {k: v[row] for k, v in infos["final_obs"].items()}
                out[e]["TimeLimit.truncated"] = bool(trunc[e] and not term[e])
            return obs, rew, done, out

        def close(self):
            pass

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.env, attr_name)] * self.num_envs

        def set_attr(self, attr_name, value, indices=None):
            pass

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [None] * self.num_envs

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * self.num_envs

    class CarlFeatures(BaseFeaturesExtractor):
        """Our encoder (BEV CNN, measurement MLP, joint layer), with the value-only inputs appended."""

        def __init__(self, observation_space: gym.spaces.Dict, net=None):
            bev_shape = observation_space["bev"].shape
            body = CarlActorCritic(bev_shape, observation_space["measurements"].shape[0],
                                   observation_space["value_inputs"].shape[0], 2, net)
            super().__init__(observation_space, net.hidden + observation_space["value_inputs"].shape[0])
            self.body = body

        def forward(self, obs):
            feat = self.body.features(obs["bev"], obs["measurements"])
            return torch.cat([feat, obs["value_inputs"]], dim=-1)

    return DriveVecEnvAdapter, CarlFeatures


def sb3(n: int) -> float:
    """Env-steps/s of stable-baselines3 PPO with the same network over ``UPDATES`` updates."""
    import torch
    from stable_baselines3 import PPO

    from steer.driving.env import DriveVectorEnv

    cfg = ppo_config(n)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    adapter, features = _sb3_classes()
    venv = adapter(DriveVectorEnv(n, cfg.env))
    model = PPO("MultiInputPolicy", venv, n_steps=cfg.num_steps, batch_size=cfg.minibatch_size,
                n_epochs=cfg.update_epochs, learning_rate=cfg.learning_rate, gamma=cfg.gamma,
                gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_coef, clip_range_vf=cfg.clip_coef,
                ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm, device="cpu",
                policy_kwargs=dict(features_extractor_class=features, features_extractor_kwargs=dict(net=cfg.net),
                                   net_arch=dict(pi=[], vf=[cfg.net.value_hidden]), activation_fn=torch.nn.ReLU,
                                   normalize_images=False, share_features_extractor=True), seed=0, verbose=0)
    steps = UPDATES * n * cfg.num_steps
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t0)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None}


def main() -> int:
    runs: dict[str, list[float]] = {}
    for rep in range(REPEATS):
        for n in SIZES:
            for name, fn in (("ours", ours), ("sb3", sb3)) if rep % 2 == 0 else (("sb3", sb3), ("ours", ours)):
                sps = fn(n)
                gc.collect()
                runs.setdefault(f"sps.{name}.{n}", []).append(sps)
                print(f"repeat {rep} {name:4s} {n:5d} envs: {sps:8.0f} steps/s", flush=True)
    figures = {k: statistics.median(v) for k, v in runs.items()}
    for n in SIZES:
        figures[f"speedup.{n}"] = figures[f"sps.ours.{n}"] / figures[f"sps.sb3.{n}"]
    print(f"\n{'envs':>6} {'ours sps':>10} {'sb3 sps':>10} {'speedup':>8}")
    for n in SIZES:
        ours_n, sb3_n, speedup = figures[f"sps.ours.{n}"], figures[f"sps.sb3.{n}"], figures[f"speedup.{n}"]
        print(f"{n:>6} {ours_n:>10.0f} {sb3_n:>10.0f} {speedup:>8.2f}")
    import stable_baselines3
    import torch

    out = {"figures": figures,
           "details": {"runs": runs, "repeats": REPEATS, "rollout_steps": ROLLOUT_STEPS, "minibatch": MINIBATCH,
                       "updates_per_measurement": UPDATES, "torch_threads": 1, "bev": "64x64x8 at 1 px/m",
                       "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                       "note": "SB3 uses a diagonal Gaussian (it has no Beta); everything else is the same network"},
           "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "ppo_throughput.json"), "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
