"""How fast DSRL-NA's action critic learns which demonstrations succeed, from their first chunk on.

On a long task the latent that decides success runs many chunks before the success: on Can the
grasp is chosen about 40 chunks before the can lands in its bin. The critic Q_A can rank those
early chunks only once the success has been propagated back through as many TD targets, and its
target network moves a step ``tau`` per update, so the propagation takes about one ``1 / tau``-update
lag per chunk. This bench measures it without the environment: Q_A (DSRL-NA's own learner and TD step,
:meth:`steer.agent.dsrl.na.NaLearner.q_a_step`) is trained on the task's demonstration chunks, the
next chunk decoded from the BC baseline's noise (a policy evaluation of the BC policy, no actor), and
every ``--report-every`` updates it scores the executed chunk at steps 0, 40 and 100 of every
demonstration. The *gap* is the mean Q of the successful demonstrations minus that of the failed
ones at the same step: 0 until the success has reached that step.

Figures, per ``--taus`` value τ (``tau_0.005`` is the default DSRL setting):

* ``gap.<task>.t<step>.tau_<τ>``: the gap after ``--updates`` updates;
* ``updates_to_gap.<task>.t0.tau_<τ>``: updates until the first chunk's gap reaches 20, five chunks
  of the −1-per-step reward (null when it did not within ``--updates``);
* ``q_fail.<task>.t0.tau_<τ>``: the failed demonstrations' mean Q at step 0 (the value's scale).

It needs the task's demonstrations and BC run from ``bench/manipulation.py`` (``--work``).

    python bench/value_propagation.py --task can --taus 0.005 0.05
    python bench/value_propagation.py --task lift --work runs/bench-manipulation --updates 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchlib import write_results
from manipulation import TASKS  # the tasks, and the work folder's layout, are bench/manipulation.py's

ROOT = Path(__file__).resolve().parent
PROBE_STEPS = (0, 40, 100)
GAP_LEVEL = 20.0


def propagate(task: str, work: Path, tau: float, updates: int, report_every: int, seed: int) -> dict:
    """Train Q_A on ``task``'s demonstrations with target step ``tau``; the gap curve at the probe steps."""
    from dataclasses import replace

    import numpy as np
    import torch

    from steer.agent.bc import base_latents, load_policy
    from steer.agent.dsrl.core import DSRLConfig
    from steer.agent.dsrl.na import NaLearner, prefill_from_demos
    from steer.agent.presets import apply_dsrl_preset
    from steer.sim.demos import load_demos

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    policy = load_policy(work / f"{task}-bc" / "checkpoints").eval()
    for p in policy.parameters():
        p.requires_grad_(False)
    cfg = replace(apply_dsrl_preset(DSRLConfig(algorithm="na", seed=seed), TASKS[task]), tau=tau)
    demos = load_demos(work / f"{task}-data")
    rng = np.random.default_rng(seed)
    na = NaLearner(policy, cfg, rng)
    transitions = prefill_from_demos(na.buf, policy, demos, cfg.reward_offset)
    h = policy.cfg.chunk_len
    probes = {}
    for t in PROBE_STEPS:
        rows = [(obs[t], act[t:t + h], ok) for obs, act, ok in zip(demos.observations, demos.actions, demos.successes)
                if len(act) >= t + h]
        obs = policy.obs_norm.normalize(torch.from_numpy(np.stack([r[0] for r in rows])))
        act = policy.act_norm.normalize(torch.from_numpy(np.stack([r[1] for r in rows]))).flatten(1)
        probes[t] = (obs, act, np.array([r[2] for r in rows]))
    curve = []
    t0 = time.time()
    for k in range(updates + 1):
        if k % report_every == 0 or k == updates:
            point = {"updates": k}
            with torch.no_grad():
                for t, (obs, act, ok) in probes.items():
                    q = na.q_a.min(obs, act).numpy()
                    point[f"t{t}"] = {"gap": float(q[ok].mean() - q[~ok].mean()) if ok.any() and (~ok).any() else None,
                                      "q_success": float(q[ok].mean()) if ok.any() else None,
                                      "q_fail": float(q[~ok].mean()) if (~ok).any() else None, "n": int(len(ok))}
            curve.append(point)
        if k == updates:
            break
        batch = na.buf.sample(rng, cfg.batch_size)
        na.q_a_step(batch, torch.from_numpy(base_latents(policy, rng, cfg.batch_size)), 0.0)
        na.sync_target()
    return {"task": task, "tau": tau, "gamma": cfg.gamma, "lr": cfg.lr, "batch_size": cfg.batch_size,
            "transitions": transitions, "demos": len(demos.actions), "curve": curve, "seconds": time.time() - t0}


def updates_to(curve: list[dict], key: str, level: float = GAP_LEVEL) -> int | None:
    """Updates of the first report whose gap at ``key`` reaches ``level`` (None: never)."""
    return next((p["updates"] for p in curve if (p[key]["gap"] or 0.0) >= level), None)


def plot(runs: list[dict], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steer.ops.report import _save

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {0: "-", 40: "--", 100: ":"}
    for i, r in enumerate(runs):
        color = f"C{i}"
        for t in PROBE_STEPS:
            xs = [p["updates"] for p in r["curve"]]
            ys = [p[f"t{t}"]["gap"] for p in r["curve"]]
            ax.plot(xs, ys, styles[t], color=color, label=f"tau {r['tau']:g}, step {t}")
    ax.axhline(GAP_LEVEL, color="gray", lw=0.8)
    ax.set(title=f"{TASKS[runs[0]['task']]}: Q_A(successful demos) - Q_A(failed demos)", xlabel="critic updates",
           ylabel="gap at the demonstration step")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="can")
    ap.add_argument("--taus", nargs="+", type=float, default=[0.005, 0.05])
    ap.add_argument("--updates", type=int, default=4000)
    ap.add_argument("--report-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-manipulation"),
                    help="bench/manipulation.py's work folder, with <task>-data and <task>-bc")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "value_propagation.json")
    args = ap.parse_args()
    if any(not 0 < t <= 1 for t in args.taus):
        print(f"--taus {' '.join(map(str, args.taus))}: each must be in (0, 1].")
        return 2
    if args.updates < 1 or args.report_every < 1:
        print("--updates and --report-every must be at least 1.")
        return 2
    for need in (args.work / f"{args.task}-data", args.work / f"{args.task}-bc" / "checkpoints"):
        if not need.exists():
            print(f"{need} is missing: run `python bench/manipulation.py --tasks {args.task} --dsrl-tasks "
                  f"--work {args.work}` first (demonstrations and BC only).")
            return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        jobs = [pool.submit(propagate, args.task, args.work, tau, args.updates, args.report_every, args.seed)
                for tau in args.taus]
        runs = [j.result() for j in jobs]
    figures: dict[str, float | None] = {}
    for r in runs:
        tag = f"{args.task}.t{{}}.tau_{r['tau']:g}"
        last = r["curve"][-1]
        for t in PROBE_STEPS:
            figures[f"gap.{tag.format(t)}"] = last[f"t{t}"]["gap"]
        figures[f"updates_to_gap.{tag.format(0)}"] = updates_to(r["curve"], "t0")
        figures[f"q_fail.{tag.format(0)}"] = last["t0"]["q_fail"]
    png = plot(runs, args.out.with_suffix(".png"))
    write_results(args.out, figures, {"runs": runs, "updates": args.updates, "seed": args.seed,
                                      "gap_level": GAP_LEVEL, "probe_steps": list(PROBE_STEPS), "plot": png.name})
    for k, v in figures.items():
        print(f"{k:<40} {'—' if v is None else f'{v:.4g}'}")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
