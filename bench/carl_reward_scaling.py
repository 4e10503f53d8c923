"""Experiment: does the simple CaRL reward keep working as the minibatch grows, where Roach's shaped
reward breaks down (Jaeger et al. 2025)?

CaRL reward vs Roach reward, each at a small and a large minibatch, with the same sample budget and
the same PPO settings otherwise, over several seeds. Sized for a 2-core CPU: 2-town worlds with
60-150 m routes, traffic and lights, a 32 x 32 BEV and a small network. Each run is then driven with
mean actions on held-out routes in towns it never saw; figures are medians over seeds of the mean
route completion (``rc.<reward>.<size>``) and driving score (``ds.<reward>.<size>``). Writes
``bench/results/carl_reward_scaling.json``.

Knobs (environment): ``SCALING_SEEDS`` (3), ``SCALING_STEPS`` (samples per run, 49,152),
``SCALING_ROUTES`` (held-out routes, 50).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = int(os.environ.get("SCALING_SEEDS", "3"))
STEPS = int(os.environ.get("SCALING_STEPS", str(48 * 1024)))
ROUTES = int(os.environ.get("SCALING_ROUTES", "50"))
NUM_ENVS, NUM_STEPS = 32, 64
MINIBATCH = {"small": 256, "large": NUM_ENVS * NUM_STEPS}
"""Samples per gradient step: 8 minibatches per epoch vs the whole rollout in one."""


def env_config(reward: str):
    from steer.driving import BevConfig, DriveEnvConfig, SimConfig, TownConfig

    sim = SimConfig(seed=11, n_towns=2, routes_per_town=64, town=TownConfig(nx=3, ny=3), route_min_length=60.0,
                    route_max_length=150.0, n_npcs=4, timeout_base_s=15.0)
    return DriveEnvConfig(sim=sim, bev=BevConfig(size=32, pixels_per_meter=0.5, ego_from_bottom=12), reward=reward,
                          obs="bev")


def ppo_config(reward: str, size: str, seed: int):
    from steer.agent.ppo_config import NetConfig, PPOConfig

    net = NetConfig(cnn_channels=(8, 16), bev_features=64, measurement_features=32, hidden=64, value_hidden=64)
    return PPOConfig(seed=seed, total_timesteps=STEPS, num_envs=NUM_ENVS, num_steps=NUM_STEPS,
                     minibatch_size=MINIBATCH[size], learning_rate=1e-3, torch_threads=1,
                     checkpoint_every=10**9, net=net, env=env_config(reward))


def one_run(reward: str, size: str, seed: int) -> dict:
    """Train one configuration and evaluate it on held-out routes (always with the CaRL metrics)."""
    import torch

    from steer.agent.ppo import obs_to_torch, train_ppo
    from steer.agent.runlog import MemoryLog
    from steer.driving.evaluation import evaluate_routes, heldout_env_config
    from steer.driving.score import route_summary

    cfg = ppo_config(reward, size, seed)
    t0 = time.time()
    res = train_ppo(cfg, MemoryLog())
    model = res.model.eval()

    def act(obs):
        return model.act(obs_to_torch(obs)).numpy()

    held = heldout_env_config(cfg.env, n_routes=ROUTES, seed=2_000_003, n_towns=2)
    with torch.no_grad():
        s = route_summary(evaluate_routes(act, held, ROUTES, seed=seed))
    return {"reward": reward, "minibatch": size, "seed": seed, "rc": s["route_completion"], "ds": s["driving_score"],
            "infractions_per_km": s["infractions/total_per_km"], "sps": res.sps, "seconds": time.time() - t0}


def main() -> int:
    from benchlib import write_results

    records = []
    for seed in range(SEEDS):
        for size in ("small", "large"):
            for reward in ("carl", "roach"):  # interleaved, so that load on the machine hits all alike
                r = one_run(reward, size, seed)
                records.append(r)
                print(f"seed {seed} {reward:5s} {size:5s}: rc {r['rc']:.3f} ds {r['ds']:.3f} "
                      f"({r['seconds']:.0f} s)", flush=True)
    figures = {}
    for metric in ("rc", "ds"):
        for reward in ("carl", "roach"):
            for size in ("small", "large"):
                vals = [r[metric] for r in records if r["reward"] == reward and r["minibatch"] == size]
                figures[f"{metric}.{reward}.{size}"] = statistics.median(vals)
    print(f"\n{'reward':6s} {'minibatch':>9s} {'route compl.':>12s} {'driving score':>13s}")
    for reward in ("carl", "roach"):
        for size in ("small", "large"):
            print(f"{reward:6s} {MINIBATCH[size]:>9d} {figures[f'rc.{reward}.{size}']:>12.3f} "
                  f"{figures[f'ds.{reward}.{size}']:>13.3f}")
    write_results(os.path.join(HERE, "results", "carl_reward_scaling.json"), figures,
                  {"runs": records, "seeds": SEEDS, "samples_per_run": STEPS, "num_envs": NUM_ENVS,
                   "num_steps": NUM_STEPS, "minibatch": MINIBATCH, "heldout_routes": ROUTES,
                   "world": "2 generated 3x3 towns, 60-150 m routes, 4 traffic vehicles, lights; "
                            "BEV 32x32 at 0.5 px/m",
                   "statistic": "median over seeds of the mean over held-out routes"})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
