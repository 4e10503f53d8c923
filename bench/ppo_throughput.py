"""Benchmark: end-to-end PPO env-steps/s (rollout + update) of our CaRL trainer vs stable-baselines3.

Two settings, each with the same network, env and PPO settings for both trainers:

* ``bev`` (CaRL's setting): our CNN over the 64 x 64 BEV + measurement MLP, the joint layer, a
  128-unit value layer; rollout 16, minibatch 1,024, 3 epochs, one torch thread; 64, 256 and 1,024
  envs. Figures ``sps.ours.<n>``, ``sps.sb3.<n>``, ``speedup.<n>``.
* ``vector`` (the CPU default): the MLP over the structured observation with the trainer's default
  envs, rollout, minibatch and epochs. Ours runs as `steer drive train` does (two local processes,
  DistributedDataParallel, one torch thread each); SB3 runs in one process with two torch threads.
  Figures ``sps.vector.ours``,
  ``sps.vector.sb3``, ``speedup.vector``, and steps per CPU-second of each (``cpu_sps.vector.*``:
  what the figure would be on idle cores, since the machine is shared).

SB3 sees the env through a thin ``VecEnv`` adapter; it has no Beta distribution, so it uses its
diagonal Gaussian (same cost class). Ours and SB3 alternate over several repeats; each measurement
is ``UPDATES`` PPO updates after construction. Figures are medians. The machine's load average is
recorded with them. Writes ``bench/results/ppo_throughput.json``.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (64, 256, 1024)
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ROLLOUT_STEPS = 16
"""Steps per env per rollout (SB3 stores observations as float32: 1,024 envs x 16 steps of BEV is 2 GB)."""
MINIBATCH = 1024
UPDATES = 2


VECTOR_UPDATES = int(os.environ.get("BENCH_VECTOR_UPDATES", "3"))


def ppo_config(n: int | None, setting: str = "bev"):
    """The PPO config of a setting: ``bev`` at ``n`` envs, or ``vector`` with the trainer's defaults."""
    import dataclasses

    from steer.agent.ppo_config import PPOConfig, WarmStartConfig

    if setting == "vector":
        # PPO's own throughput: the defaults without the imitation warm start (the scripted driver's rollouts).
        cfg = PPOConfig(checkpoint_every=10**9, warm_start=WarmStartConfig())
        return dataclasses.replace(cfg, total_timesteps=10 * cfg.batch_size)
    base = PPOConfig()
    return PPOConfig(num_envs=n, num_steps=ROLLOUT_STEPS, minibatch_size=MINIBATCH, torch_threads=1,
                     total_timesteps=10 * n * ROLLOUT_STEPS, checkpoint_every=10**9,
                     env=dataclasses.replace(base.env, obs="bev"))


def ours(n: int | None, setting: str = "bev") -> tuple[float, float]:
    """(env-steps/s, env-steps per CPU-second) of :func:`steer.agent.ppo.train_ppo` over some updates."""
    from steer.agent.ppo import train_ppo
    from steer.agent.runlog import MemoryLog

    if setting == "vector":
        return ours_vector()
    res = train_ppo(ppo_config(n, setting), MemoryLog(), max_updates=UPDATES)
    return res.sps, res.sps * res.seconds / max(res.cpu_seconds, 1e-9)


def ours_vector() -> tuple[float, float]:
    """`steer drive train`'s own SPS with its defaults (two processes) over ``VECTOR_UPDATES`` updates; the
    per-CPU figure is env steps per CPU-second over both processes."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from steer.ops.drive_stages import DriveTrainConfig, train_driving_local

    cfg = ppo_config(None, "vector")
    cfg = dataclasses.replace(cfg, total_timesteps=VECTOR_UPDATES * cfg.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        out = train_driving_local(DriveTrainConfig(name="tp", runs=Path(tmp), max_minutes=0, eval_routes=0,
                                                   progress=False, ppo=cfg))
    return out.sps, out.summary["sps_per_cpu"]


def _sb3_classes():
    import gymnasium as gym
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import VecEnv

    from steer.agent.ppo_nets import CarlActorCritic, obs_shapes

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
        """Our encoder (BEV CNN or vector MLP, measurement inputs, joint layer), with the value-only
        inputs appended."""

        def __init__(self, observation_space: gym.spaces.Dict, net=None):
            body = CarlActorCritic(obs_shapes(observation_space), 2, net)
            super().__init__(observation_space, net.hidden + observation_space["value_inputs"].shape[0])
            self.body = body

        def forward(self, obs):
            return torch.cat([self.body.features(obs), obs["value_inputs"]], dim=-1)

    return DriveVecEnvAdapter, CarlFeatures


def sb3(n: int | None, setting: str = "bev") -> tuple[float, float]:
    """(env-steps/s, env-steps per CPU-second) of stable-baselines3 PPO with the same network."""
    import torch
    from stable_baselines3 import PPO

    from steer.driving.env import DriveVectorEnv

    cfg = ppo_config(n, setting)
    n = cfg.num_envs
    torch.set_num_threads(2 if setting == "vector" else cfg.torch_threads)
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
    steps = (VECTOR_UPDATES if setting == "vector" else UPDATES) * n * cfg.num_steps
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def _previous_figures() -> dict:
    """Figures of the last full run (kept when only some settings are measured again)."""
    try:
        with open(os.path.join(HERE, "results", "ppo_throughput.json")) as f:
            return json.load(f)["figures"]
    except (OSError, KeyError, ValueError):
        return {}


def main() -> int:
    settings = os.environ.get("BENCH_SETTINGS", "vector,bev").split(",")
    runs: dict[str, list[float]] = {}
    loads = [os.getloadavg()[0]]
    for rep in range(REPEATS):
        order = (("ours", ours), ("sb3", sb3)) if rep % 2 == 0 else (("sb3", sb3), ("ours", ours))
        if "vector" in settings:
            for name, fn in order:
                sps, cpu_sps = fn(None, "vector")
                gc.collect()
                runs.setdefault(f"sps.vector.{name}", []).append(sps)
                runs.setdefault(f"cpu_sps.vector.{name}", []).append(cpu_sps)
                print(f"repeat {rep} vector {name:4s}: {sps:8.0f} steps/s, {cpu_sps:8.0f} per CPU-second", flush=True)
        if "bev" in settings:
            for n in SIZES:
                for name, fn in order:
                    sps, _ = fn(n)
                    gc.collect()
                    runs.setdefault(f"sps.{name}.{n}", []).append(sps)
                    print(f"repeat {rep} {name:4s} {n:5d} envs: {sps:8.0f} steps/s", flush=True)
        loads.append(os.getloadavg()[0])
    figures = {k: statistics.median(v) for k, v in runs.items()}
    if "vector" in settings:
        figures["speedup.vector"] = figures["sps.vector.ours"] / figures["sps.vector.sb3"]
        figures["cpu_speedup.vector"] = figures["cpu_sps.vector.ours"] / figures["cpu_sps.vector.sb3"]
        print(f"vector: ours {figures['sps.vector.ours']:.0f}, sb3 {figures['sps.vector.sb3']:.0f} steps/s "
              f"({figures['speedup.vector']:.2f}x); per CPU-second {figures['cpu_sps.vector.ours']:.0f} vs "
              f"{figures['cpu_sps.vector.sb3']:.0f}")
    if "bev" not in settings:
        old = _previous_figures()
        figures.update({k: v for k, v in old.items() if k not in figures})
    for n in SIZES:
        if f"sps.ours.{n}" in figures and "bev" in settings:
            figures[f"speedup.{n}"] = figures[f"sps.ours.{n}"] / figures[f"sps.sb3.{n}"]
    print(f"\n{'envs':>6} {'ours sps':>10} {'sb3 sps':>10} {'speedup':>8}")
    for n in SIZES if "bev" in settings else ():
        ours_n, sb3_n, speedup = figures[f"sps.ours.{n}"], figures[f"sps.sb3.{n}"], figures[f"speedup.{n}"]
        print(f"{n:>6} {ours_n:>10.0f} {sb3_n:>10.0f} {speedup:>8.2f}")
    import stable_baselines3
    import torch

    out = {"figures": figures,
           "details": {"runs": runs, "repeats": REPEATS, "rollout_steps": ROLLOUT_STEPS, "minibatch": MINIBATCH,
                       "updates_per_measurement": UPDATES, "torch_threads": 1, "bev": "64x64x8 at 1 px/m",
                       "settings": settings, "load_average_1min": loads,
                       "vector": {"num_envs": ppo_config(None, "vector").num_envs,
                                  "num_steps": ppo_config(None, "vector").num_steps,
                                  "minibatch": ppo_config(None, "vector").minibatch_size,
                                  "torch_threads": ppo_config(None, "vector").torch_threads,
                                  "updates_per_measurement": VECTOR_UPDATES},
                       "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                       "note": "SB3 uses a diagonal Gaussian (it has no Beta); everything else is the same network"},
           "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "ppo_throughput.json"), "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
