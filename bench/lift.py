"""The DSRL paper's own setting: robosuite Lift (Panda), BC diffusion policy, then DSRL-SAC.

robosuite is part of the ``all`` extra (``make install``)::

    .venv/bin/python bench/lift.py --demos 200 --env-steps 10000

Steps: scripted demonstrations (a careful operator and one whose grasp is offset by a
calibration error), a BC diffusion policy, its success with w ~ N(0, I), DSRL-SAC for
``--env-steps`` env steps, and the deterministic latent actor's success, each on held-out
episodes. Writes ``bench/results/lift.json``. Robosuite runs at under 100 env-steps/s
here, so this is a long benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TASK = "steer/Lift-v0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--bc-steps", type=int, default=6_000)
    ap.add_argument("--env-steps", type=int, default=10_000)
    ap.add_argument("--eval-every", type=int, default=2_000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-lift"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lift.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import robosuite  # noqa: F401
    except ImportError:
        print("robosuite is not installed: run `make install` (it is in the `all` extra).")
        return 2
    import numpy as np
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import BCConfig, base_policy_fn, load_policy, train_bc
    from steer.agent.dsrl import DSRLConfig, train_dsrl
    from steer.agent.evaluate import evaluate_chunked
    from steer.agent.runlog import MemoryLog
    from steer.sim.demos import collect_demos, load_demos
    from steer.sim.robosuite_lift import LiftExpert

    torch.set_num_threads(1)
    t0 = time.time()
    data, ckpt = args.work / "data", args.work / "bc"
    timings = {}
    if not (ckpt / "policy.safetensors").exists():
        t = time.time()
        collect_demos(TASK, LiftExpert(seed=1000), args.demos, 1000, data, progress=True)
        timings["demos_s"] = time.time() - t
        demos = load_demos(data)
        t = time.time()
        train_bc(demos.observations, demos.actions, BCConfig(steps=args.bc_steps, seed=args.seed), MemoryLog(ckpt),
                 {"task": TASK}, progress=True)
        timings["bc_s"] = time.time() - t
    demos = load_demos(data)
    policy = load_policy(ckpt)
    t = time.time()
    bc = evaluate_chunked(TASK, base_policy_fn(policy, args.seed), args.eval_episodes, num_envs=8, progress=True, desc="eval bc")
    timings["bc_eval_s"] = time.time() - t
    cfg = DSRLConfig(env_steps=args.env_steps, eval_every=args.eval_every, eval_episodes=20, seed=args.seed)
    t = time.time()
    fn, det = train_dsrl(policy, TASK, cfg, MemoryLog(), progress=True)
    timings["dsrl_s"] = time.time() - t
    dsrl = evaluate_chunked(TASK, fn, args.eval_episodes, num_envs=8, progress=True, desc="eval dsrl")
    figures = {"demo_success": float(np.mean(demos.successes)), "bc_success": bc.success_rate,
               "dsrl_success": dsrl.success_rate, "dsrl_env_steps": det["progress"].env_steps}
    doc = {"figures": figures,
           "details": {"demos": args.demos, "bc_steps": args.bc_steps, "eval_episodes": args.eval_episodes,
                       "curve": det["progress"].curve, "timings_s": timings, "wall_s": time.time() - t0,
                       "dsrl_config": {"utd": cfg.utd, "latent_noise_bound": cfg.latent_noise_bound,
                                       "env_steps": cfg.env_steps}},
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None},
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"demos {figures['demo_success']:.2f} success; BC {bc.success_rate:.2f}; "
          f"DSRL-SAC {dsrl.success_rate:.2f} after {figures['dsrl_env_steps']} env steps; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
