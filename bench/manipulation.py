"""DSRL on the paper's manipulation tasks: robosuite Lift and Can, demos → BC → DSRL-NA and DSRL-SAC.

Per task: scripted demonstrations (``steer collect``), a BC diffusion policy evaluated with
w ~ N(0, I) clipped to the latent bound (``steer bc``), then DSRL-NA and DSRL-SAC over that
policy (``steer dsrl`` with the task's preset, agent/presets.py), two runs at a time (one per
core). Every stage is the CLI's own stage function, its run directory under ``--work``
(``<task>-data``, ``<task>-bc``, ``<task>-dsrl_na``, ``<task>-dsrl_sac``); a stage that already
finished there is reused, so the benchmark can be resumed or assembled from runs made by hand.

Figures (with ``--seeds N``, the median over N DSRL seeds on the one BC policy; one seed by default,
since each run is up to an hour of both cores):

* ``success.<task>.demos``: share of successful demonstrations;
* ``success.<task>.{bc,dsrl_na,dsrl_sac}``: success on ``--eval-episodes`` held-out episodes
  (DSRL: the deterministic latent actor the run kept, the best of its learning curve unless
  ``--set ALGO.keep_best=false``; each run's record says which, ``kept`` and ``kept_env_steps``);
* ``steps_to_0.9.<task>.{dsrl_na,dsrl_sac}``: first learning-curve evaluation (the preset's
  episodes per point) from which the curve and the final evaluation stay at or above 0.9, null
  when there is none;
* ``minutes.<task>.{demos,bc,dsrl_na,dsrl_sac}``: wall-clock minutes of each stage (BC and DSRL
  include their final evaluation; a resumed DSRL run counts from its first start), on a machine
  whose load is recorded in the details.

    python bench/manipulation.py --tasks lift --env-steps 6000
    python bench/manipulation.py --tasks lift can --algos na sac
    python bench/manipulation.py --tasks lift can --dsrl-tasks lift   # Can: demos and BC only
    python bench/manipulation.py --tasks lift --seeds 3 --algo-seeds sac=1 --set na.max_minutes=35
    python bench/manipulation.py --tasks lift can --seeds 3 --only-finished   # figures of the runs there
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from benchlib import median_or_none, write_results

ROOT = Path(__file__).resolve().parent
TASKS = {"lift": "steer/Lift-v0", "can": "steer/Can-v0"}


def prepare(task: str, work: Path, demos: int, eval_episodes: int, seed: int) -> dict:
    """Demonstrations and the BC run of ``task`` (reused when already there); their figures and minutes."""
    from steer.agent.bc import BCConfig
    from steer.ops.stages import BCResult, BCRunConfig, CollectConfig, collect_demos, finished, run_bc

    data, timing = work / f"{task}-data", work / f"{task}-data" / "timing.json"
    if not timing.exists():
        t = time.time()
        collect_demos(CollectConfig(out=data, episodes=demos, seed=1000, task=TASKS[task], overwrite=True))
        timing.write_text(json.dumps({"collect_s": time.time() - t}) + "\n")
    collect_s = json.loads(timing.read_text())["collect_s"]
    bc = finished(work / f"{task}-bc", BCResult) or run_bc(
        BCRunConfig(data=data, name=f"{task}-bc", runs=work, eval_episodes=eval_episodes, bc=BCConfig(seed=seed)),
        progress=False)
    return {"demos": bc.demos, "demo_success": bc.demo_success_rate, "bc_success": bc.eval.success_rate,
            "bc_episodes": bc.eval.episodes, "collect_s": collect_s, "bc_s": bc.train_s}


def dsrl_job(task: str, algo: str, work: Path, env_steps: int, eval_episodes: int, seed: int,
             overrides: dict) -> dict:
    """One DSRL run with the task's preset (``algo`` kept; ``overrides`` win over the preset)."""
    from dataclasses import replace

    from steer.agent.dsrl import DSRLConfig
    from steer.ops.stages import DSRLResult, DSRLRunConfig, finished, run_dsrl

    name = run_name(task, algo, seed)
    res = finished(work / name, DSRLResult)
    if res is None:
        if algo == "na":  # Q_A learns from the demonstrations too (executed actions need no latent)
            overrides = {"na_prefill_demos": str(work / f"{task}-data"), **overrides}
        dsrl = replace(DSRLConfig(algorithm=algo, env_steps=env_steps, seed=seed), **overrides)
        res = run_dsrl(DSRLRunConfig(policy=work / f"{task}-bc", name=name, runs=work, eval_episodes=eval_episodes,
                                     dsrl=dsrl, preset_keep=("algorithm", *overrides),
                                     resume=(work / name / "checkpoints").exists()), progress=False)
    doc = json.loads((work / name / "config.json").read_text())
    # A resumed run's train_s counts only its last process: wall time runs from the first start to the summary.
    wall_s = (work / name / "summary.json").stat().st_mtime - (doc.get("resumed_from") or doc["started"])
    return {"task": task, "algo": algo, "seed": seed, "success": res.eval.success_rate, "episodes": res.eval.episodes,
            "env_steps": res.env_steps, "curve": res.curve, "train_s": wall_s, "resumed": "resumed_from" in doc,
            "config": doc["config"]["dsrl"],
            # Which actor the final evaluation measured (runs made before keep_best kept their last one).
            "kept": (res.selection or {}).get("selected", "final"),
            "kept_env_steps": (res.selection or {}).get("selected_env_steps", res.env_steps)}


def run_name(task: str, algo: str, seed: int) -> str:
    """The DSRL run's folder under ``--work`` (seed 0 keeps the one-seed name)."""
    return f"{task}-dsrl_{algo}" + (f"-s{seed}" if seed else "")


def steps_to(curve: list, final: float, level: float = 0.9):
    """Env steps of the first curve point from which every later point and the ``final`` evaluation
    stay at or above ``level`` (None when there is none: a run that touches 0.9 on one 20-episode
    point and then collapses has not reached it)."""
    if final < level:
        return None
    reached = None
    for s, success, *_ in curve:
        if success < level:
            reached = None
        elif reached is None:
            reached = int(s)
    return reached


def plot(results: list[dict], prep: dict, out_png: Path) -> Path:
    """Learning curves of every task and algorithm, with the BC level marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steer.ops.report import _save

    tasks = list(prep)  # a task without DSRL runs still shows its demonstrations and BC
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5.5), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in results if r["task"] == task):
            xs, ys = [c[0] for c in r["curve"]], [c[1] for c in r["curve"]]
            n = r["config"]["eval_episodes"]
            name = f"DSRL-{r['algo'].upper()} seed {r.get('seed', 0)}"
            line, = ax.plot(xs, ys, marker="o", label=f"{name} (curve: {n} episodes a point)")
            kept = r.get("kept_env_steps", r["env_steps"])
            ax.plot([kept], [r["success"]], marker="*", ms=12, ls="", color=line.get_color(),
                    label=f"{name} kept actor ({kept / 1000:.1f}k), {r['episodes']} episodes: {r['success']:.2f}")
        ax.axhline(prep[task]["bc_success"], color="gray", ls="--", label=f"BC {prep[task]['bc_success']:.2f}")
        ax.axhline(prep[task]["demo_success"], color="gray", ls=":",
                   label=f"demonstrations {prep[task]['demo_success']:.2f}")
        ax.set(title=f"{TASKS[task]}", xlabel="env steps", ylabel="success (deterministic actor)", ylim=(0, 1.02))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, out_png)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["lift", "can"])
    ap.add_argument("--algos", nargs="+", choices=("na", "sac"), default=["na", "sac"])
    ap.add_argument("--dsrl-tasks", nargs="*", choices=sorted(TASKS), default=None,
                    help="tasks whose DSRL runs (default: all of --tasks); the others get demos and BC only")
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--env-steps", type=int, default=None, help="DSRL env steps per run (default: the preset's)")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="seed of BC and of the first DSRL run per algorithm")
    ap.add_argument("--seeds", type=int, default=1, help="DSRL runs per task and algorithm (seeds --seed, --seed+1, "
                    "...); the figures are their medians")
    ap.add_argument("--algo-seeds", nargs="*", default=[], metavar="ALGO=N",
                    help="fewer (or more) seeds for one algorithm, e.g. sac=1")
    ap.add_argument("--set", nargs="*", default=[], metavar="ALGO.FIELD=VALUE",
                    help="DSRL settings over the preset, e.g. sac.lr=1e-4 na.na_utd=2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only-finished", action="store_true",
                    help="start no DSRL run: assemble the figures from the runs already finished under --work "
                         "(the planned runs missing there are listed in the details)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-manipulation"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "manipulation.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import robosuite  # noqa: F401
    except ImportError:
        print("robosuite is not installed: run `make install` (it is in the `all` extra).")
        return 2
    import steer.sim  # noqa: F401
    from steer.agent.presets import dsrl_preset

    overrides: dict[str, dict] = {a: {} for a in args.algos}
    for item in args.set:
        key, _, value = item.partition("=")
        algo, _, name = key.partition(".")
        if algo not in overrides or not name or not value:
            print(f"--set {item}: expected ALGO.FIELD=VALUE with ALGO one of {', '.join(args.algos)}.")
            return 2
        overrides[algo][name] = json.loads(value) if value[0] in "-0123456789[{tf" else value
    if args.seeds < 1:
        print(f"--seeds {args.seeds}: expected at least 1 DSRL run per task and algorithm.")
        return 2
    n_seeds = {a: args.seeds for a in args.algos}
    for item in args.algo_seeds:
        algo, _, n = item.partition("=")
        if algo not in n_seeds or not n.isdigit() or int(n) < 1:
            print(f"--algo-seeds {item}: expected ALGO=N with ALGO one of {', '.join(args.algos)} and N at least 1.")
            return 2
        n_seeds[algo] = int(n)
    dsrl_tasks = args.tasks if args.dsrl_tasks is None else args.dsrl_tasks
    if set(dsrl_tasks) - set(args.tasks):
        print(f"--dsrl-tasks {' '.join(dsrl_tasks)}: each must be one of --tasks ({' '.join(args.tasks)}).")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        preps = {task: pool.submit(prepare, task, args.work, args.demos, args.eval_episodes, args.seed)
                 for task in args.tasks}
        jobs, missing = [], []
        for task in dsrl_tasks:
            preps[task].result()  # DSRL starts from the task's BC run
            steps = args.env_steps or dsrl_preset(TASKS[task]).get("env_steps", 24_000)
            planned = [(algo, args.seed + k) for k in range(max(n_seeds.values())) for algo in args.algos
                       if k < n_seeds[algo]]
            for algo, seed in planned:
                if args.only_finished and not (args.work / run_name(task, algo, seed) / "summary.json").exists():
                    missing.append(run_name(task, algo, seed))
                    continue
                jobs.append(pool.submit(dsrl_job, task, algo, args.work, steps, args.eval_episodes, seed,
                                        overrides[algo]))
        for j in as_completed(jobs):
            results.append(j.result())
        prep = {task: preps[task].result() for task in args.tasks}
    figures: dict[str, float | None] = {}
    for task in args.tasks:
        p = prep[task]
        figures[f"success.{task}.demos"] = p["demo_success"]
        figures[f"success.{task}.bc"] = p["bc_success"]
        figures[f"minutes.{task}.demos"] = p["collect_s"] / 60
        figures[f"minutes.{task}.bc"] = p["bc_s"] / 60
    results.sort(key=lambda r: (r["task"], r["algo"], r["seed"]))
    for task, algo in sorted({(r["task"], r["algo"]) for r in results}):
        rs = [r for r in results if (r["task"], r["algo"]) == (task, algo)]
        key = f"{task}.dsrl_{algo}"
        for r in rs:
            r["steps_to_0.9"] = steps_to(r["curve"], r["success"])
        figures[f"success.{key}"] = median_or_none([r["success"] for r in rs])
        figures[f"steps_to_0.9.{key}"] = median_or_none([r["steps_to_0.9"] for r in rs])
        figures[f"minutes.{key}"] = median_or_none([r["train_s"] / 60 for r in rs])
    png = plot(results, prep, args.out.with_suffix(".png"))
    write_results(args.out, figures,
                  {"prepare": prep, "runs": results, "seed": args.seed, "eval_episodes": args.eval_episodes,
                   "wall_s": time.time() - t0, "load_average": {"start": load0, "end": os.getloadavg()},
                   "plot": png.name, "seeds": {a: list(range(args.seed, args.seed + n)) for a, n in n_seeds.items()},
                   "median_over_seeds": True,
                   "not_measured": [TASKS[t] for t in TASKS if t not in args.tasks],
                   "dsrl_not_run": [TASKS[t] for t in args.tasks if t not in dsrl_tasks],
                   "runs_missing": missing})
    print(f"{'figure':<32} value")
    for k, v in figures.items():
        print(f"{k:<32} {'—' if v is None else f'{v:.3g}'}")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
