"""Env steps to 0.9 success: DSRL-SAC vs DSRL-NA vs SAC from scratch on the raw action space.

One dataset and one BC policy (seed 0) are shared; each algorithm runs with several
seeds, two runs at a time (one per core), interleaved by seed. The learning curve is
the deterministic policy's success over 50 held-out episodes every ``--eval-every``
env steps; "steps to 0.9" is the first evaluation at or above 0.9 (null when the
budget ran out first), "final success" is over 100 further held-out episodes.
Each algorithm runs with the library's defaults (DSRL-SAC: UTD 8; DSRL-NA: UTD 4 with
4 distillation steps; SAC from scratch: stable-baselines3's defaults).

    python bench/dsrl.py --seeds 3 --env-steps 16000
    python bench/dsrl.py --seeds 3 --env-steps 16000 --algos dsrl_na --workers 3 --keep-others
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from benchlib import median_or_none, write_results  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent
TASK = "steer/PlanarPush-v0"


def prepare(work: Path, bc_steps: int) -> Path:
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import BCConfig, train_bc
    from steer.agent.runlog import MemoryLog
    from steer.sim.demos import collect_demos, load_demos
    from steer.sim.expert import PushExpert

    data, ckpt = work / "data", work / "bc"
    if not (ckpt / "policy.safetensors").exists():
        torch.set_num_threads(1)
        collect_demos(TASK, PushExpert(seed=1000), 200, 1000, data, progress=False)
        demos = load_demos(data)
        train_bc(demos.observations, demos.actions, BCConfig(steps=bc_steps), MemoryLog(ckpt), {"task": TASK},
                 progress=False)
    return ckpt


def _steps_to(curve: list, level: float = 0.9):
    for steps, success, *_ in curve:
        if success >= level:
            return int(steps)
    return None


def run_dsrl(algorithm: str, seed: int, ckpt: str, env_steps: int, eval_every: int) -> dict:
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import load_policy
    from steer.agent.dsrl import DSRLConfig, train_dsrl
    from steer.agent.evaluate import evaluate_chunked
    from steer.agent.runlog import MemoryLog

    torch.set_num_threads(1)
    policy = load_policy(Path(ckpt))
    cfg = DSRLConfig(algorithm=algorithm, env_steps=env_steps, eval_every=eval_every, seed=seed)
    t = time.time()
    fn, det = train_dsrl(policy, TASK, cfg, MemoryLog(), progress=False)
    curve = det["progress"].curve
    final = evaluate_chunked(TASK, fn, 100).success_rate
    return {"algo": f"dsrl_{algorithm}", "seed": seed, "curve": curve, "steps_to_0.9": _steps_to(curve),
            "final_success": final, "wall_s": time.time() - t}


def run_sac_scratch(seed: int, env_steps: int, eval_every: int) -> dict:
    """SB3 SAC on the raw 2-D velocity actions with the same reward offset (-1 per step until success)."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    import steer.sim  # noqa: F401
    from steer.agent.evaluate import evaluate_chunked

    torch.set_num_threads(1)

    class Offset(gym.RewardWrapper):
        def reward(self, r):
            return r - 1.0

    env = Offset(gym.make(TASK))
    model = SAC("MlpPolicy", env, learning_starts=1000, batch_size=256, seed=seed, device="cpu",
                policy_kwargs={"net_arch": [128, 128, 128]})
    curve: list = []

    def act(obs):
        a, _ = model.predict(obs, deterministic=True)
        return a[:, None, :]

    class Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                res = evaluate_chunked(TASK, act, 50, seed=1_500_000)
                curve.append([self.num_timesteps, res.success_rate, res.return_mean])
            return True

    t = time.time()
    model.learn(total_timesteps=env_steps, callback=Eval())
    final = evaluate_chunked(TASK, act, 100).success_rate
    return {"algo": "sac_scratch", "seed": seed, "curve": curve, "steps_to_0.9": _steps_to(curve),
            "final_success": final, "wall_s": time.time() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--env-steps", type=int, default=30_000)
    ap.add_argument("--eval-every", type=int, default=2_000)
    ap.add_argument("--bc-steps", type=int, default=6_000)
    ap.add_argument("--algos", default="dsrl_sac,dsrl_na,sac_scratch")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-dsrl"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep-others", action="store_true",
                    help="keep the runs of the algorithms not in --algos from the existing results file "
                         "(same budget and seeds), so one algorithm can be rerun alone")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ckpt = prepare(args.work, args.bc_steps)
    algos = args.algos.split(",")
    jobs = []
    results: list[dict] = []
    kept: list[dict] = []
    out = ROOT / "results" / "dsrl.json"
    if args.keep_others and out.exists():
        old = json.loads(out.read_text())["details"]
        if old["env_steps_budget"] == args.env_steps and old["seeds"] == args.seeds:
            kept = [r for r in old["runs"] if r["algo"] not in algos]
            print(f"kept {len(kept)} runs of {sorted({r['algo'] for r in kept})} from {out}")
        else:
            print(f"{out} has another budget or seed count: nothing kept")
    all_algos = list(dict.fromkeys([r["algo"] for r in kept] + algos))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        # Algorithm-major order: a run cut short still has every seed of the first algorithms.
        for algo in algos:
            for seed in range(args.seeds):
                if algo == "sac_scratch":
                    jobs.append(pool.submit(run_sac_scratch, seed, args.env_steps, args.eval_every))
                else:
                    jobs.append(pool.submit(run_dsrl, algo.removeprefix("dsrl_"), seed, str(ckpt), args.env_steps,
                                            args.eval_every))
        for job in as_completed(jobs):
            results.append(job.result())
            write(kept + results, all_algos, args, complete=len(results) == len(jobs))


def write(results: list[dict], algos: list[str], args, complete: bool) -> None:
    """Write bench/results/dsrl.json from the runs finished so far (``complete`` says whether all are)."""
    figures, details = {}, {"runs": results, "env_steps_budget": args.env_steps, "seeds": args.seeds,
                            "complete": complete}
    print(f"{'algorithm':<12} {'steps to 0.9 (median)':>22} {'final success (median)':>23}")
    for algo in algos:
        rs = [r for r in results if r["algo"] == algo]
        if not rs:
            continue
        details[f"seeds_finished.{algo}"] = len(rs)
        figures[f"steps_to_0.9.{algo}"] = median_or_none([r["steps_to_0.9"] for r in rs])
        figures[f"final_success.{algo}"] = float(np.median([r["final_success"] for r in rs]))
        s = figures[f"steps_to_0.9.{algo}"]
        print(f"{algo:<12} {('not reached' if s is None else f'{s:,.0f}'):>22} "
              f"{figures[f'final_success.{algo}']:>23.2f}")
    out = ROOT / "results" / "dsrl.json"
    write_results(out, figures, details)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
