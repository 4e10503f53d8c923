"""Benchmark: CaRL's BEV PPO on a CUDA GPU (the GPU path of `steer drive train --ppo.env.obs bev`).

The BEV network runs on the GPU while the simulator and the rasterizer stay on the CPU; a few PPO
updates at 256 and 1,024 envs give the run's own env-steps/s. Without a CUDA device it says so and
writes nothing. Writes ``bench/results/ppo_bev_cuda.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (256, 1024)
UPDATES = int(os.environ.get("BENCH_UPDATES", "3"))


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run this on a GPU machine).")
        return 0
    from steer.agent.ppo import train_ppo
    from steer.agent.ppo_config import PPOConfig, WarmStartConfig
    from steer.agent.runlog import MemoryLog

    figures = {}
    for n in SIZES:
        base = PPOConfig()
        cfg = PPOConfig(num_envs=n, num_steps=64, minibatch_size=4096, device="cuda", torch_threads=0,
                        total_timesteps=10 * n * 64, checkpoint_every=10**9, warm_start=WarmStartConfig(),
                        env=dataclasses.replace(base.env, obs="bev"))
        res = train_ppo(cfg, MemoryLog(), max_updates=UPDATES)
        figures[f"sps.bev_cuda.{n}"] = res.sps
        print(f"{n:5d} envs: {res.sps:8.0f} env-steps/s on {torch.cuda.get_device_name()}", flush=True)
    out = {"figures": figures, "details": {"updates": UPDATES, "rollout_steps": 64, "minibatch": 4096,
                                           "gpu": torch.cuda.get_device_name(), "cpu_cores": os.cpu_count()},
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "ppo_bev_cuda.json"), "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
