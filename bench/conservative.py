"""Conservative exploration: DSRL-SAC with and without the EpsMix gate on PlanarPush or robosuite Lift.

One dataset and one BC policy (the baseline, w ~ N(0, I)) are shared. For each seed,
DSRL-SAC runs ungated (the gate only measures: variant ``monitor``) and gated
(variant ``epsmix``), two runs at a time, interleaved by seed. The baseline's value
V_b is measured on ``--baseline-episodes`` held-out episodes (noise clipped to the
latent bound, as in training); the threshold is
(1 − α)·L_b with L_b its Clopper–Pearson lower bound at δ.

* below-threshold fraction: training episodes come in consecutive windows of
  ``--window`` episodes; a window is below threshold when its success rate is
  under (1 − α)·L_b (the guarantee is about each episode's policy value, which a
  0/1 outcome cannot show alone). The fraction of windows below is the figure; the
  rate at which windows of the baseline alone would fall below (sampling error) is
  in the details, with the per-episode fraction of the issue's literal definition.
* final success: the deterministic latent actor on 100 held-out episodes.
* steps to 0.9: first learning-curve evaluation at or above 0.9 (null if never).

The gated runs get ``--gated-budget`` (1.5) times the ungated runs' env steps: the goal is
that gating keeps the windows at the baseline's level (below-threshold fraction ≤ δ plus
the baseline's own window noise) while final success stays ≥ 90 % of the ungated run's
within 1.5× its env steps. Gated explorer episodes run the actor's mean (the gate's
``explorer_deterministic``); the baseline's w ~ N(0, I) episodes are the exploration.

    python bench/conservative.py --seeds 5 --env-steps 10000

``--task lift`` runs the same comparison on robosuite Lift over the BC policy of
bench/manipulation.py (``--lift-bc``), with DSRL-SAC at the PlanarPush settings (the config's
defaults, no Lift preset): on Lift those are the settings under which the learner fell
(its deterministic actor from 0.70 to 0.30 in 10k env steps), i.e. where the gate should matter.
It writes ``bench/results/conservative_lift.json`` unless ``--out`` says otherwise.

    python bench/conservative.py --task lift --seeds 1 --env-steps 4000 --window 20 --baseline-episodes 100

``--harmful N`` shows the gate against a deliberately harmful explorer instead of a learner: an
explorer that plays the latent +b in every coordinate (the BC policy decoding it never succeeded
on Lift: 0 of 12 episodes), nothing learned. Ungated, every one of the N training episodes runs it;
gated, the same gate as in training decides per episode. Figures: the windows below the threshold,
the mean value of all training episodes against the threshold (what the gate's guarantee is about,
in expectation) and the explorer's share. Writes ``conservative_<task>_harmful.json``.

    python bench/conservative.py --task lift --harmful 200 --window 20 --baseline-episodes 100

``--gate-window W`` turns on the gate's window clause (``guarantee_window``): ρ is capped so that a window
of W training episodes falls under the threshold at most δ more often than a window of the baseline would,
not only the expected value. Its results go to a file of their own (``…_window.json``), beside the
expectation-only ones.

    python bench/conservative.py --task lift --harmful 400 --seeds 2 --window 20 --gate-window 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from benchlib import median_or_none, write_results  # noqa: E402  (bench/ is on sys.path when run as a script)

# The demonstrations and BC policy are prepared exactly as for bench/dsrl.py (same folder layout).
from dsrl import _steps_to, prepare  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent
TASKS = {"push": "steer/PlanarPush-v0", "lift": "steer/Lift-v0"}
BASELINE_SEED = 3_000_000


def baseline_value(task: str, ckpt: str, episodes: int) -> dict:
    """Success of the BC baseline, the policy the gate protects (its noise clipped to the latent bound)."""
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import base_policy_fn, load_policy
    from steer.agent.evaluate import evaluate_chunked

    torch.set_num_threads(1)
    policy = load_policy(Path(ckpt))
    res = evaluate_chunked(task, base_policy_fn(policy, 0), episodes, seed=BASELINE_SEED)
    return {"success_rate": res.success_rate, "successes": int(res.successes.sum()), "episodes": res.episodes}


def run_one(task: str, gated: bool, seed: int, ckpt: str, env_steps: int, eval_every: int, eval_episodes: int,
            alpha: float, delta: float, gate_kwargs: dict | None = None) -> dict:
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import load_policy
    from steer.agent.conservative import ConservativeConfig
    from steer.agent.dsrl import DSRLConfig, train_dsrl
    from steer.agent.evaluate import evaluate_chunked
    from steer.agent.runlog import MemoryLog

    torch.set_num_threads(1)
    policy = load_policy(Path(ckpt))
    gate = ConservativeConfig(variant="epsmix" if gated else "monitor", alpha=alpha, delta=delta, seed=seed,
                              **(gate_kwargs or {}))
    cfg = DSRLConfig(env_steps=env_steps, eval_every=eval_every, eval_episodes=eval_episodes, seed=seed,
                     conservative=gate)
    t = time.time()
    log = MemoryLog()
    fn, det = train_dsrl(policy, task, cfg, log, progress=False)
    curve = det["progress"].curve
    final = evaluate_chunked(task, fn, 100).success_rate
    records = [[r.env_steps, r.value, r.kind, round(r.gate_rho, 4)] for r in det["gate"].records]
    return {"gated": gated, "seed": seed, "curve": curve, "steps_to_0.9": _steps_to(curve), "final_success": final,
            "episodes": records, "wall_s": time.time() - t,
            "rho": [[s, m["safety/rho"]] for s, m in ((r["step"], r) for r in log.records) if "safety/rho" in m]}


def run_harmful(task: str, gated: bool, seed: int, ckpt: str, episodes: int, alpha: float, delta: float,
                gate_kwargs: dict | None = None) -> dict:
    """``episodes`` training episodes whose explorer plays the constant latent +b (deliberately harmful,
    nothing learned), under the gate (``gated``) or alone (the gate only measures)."""
    import torch

    import steer.sim  # noqa: F401
    from steer.agent.bc import load_policy
    from steer.agent.conservative import ConservativeConfig
    from steer.agent.dsrl import DSRLConfig
    from steer.agent.dsrl.core import ChunkGate, make_task_env
    from steer.agent.dsrl.latent_env import LatentNoiseEnv

    torch.set_num_threads(1)
    policy = load_policy(Path(ckpt))
    gate_cfg = ConservativeConfig(variant="epsmix" if gated else "monitor", alpha=alpha, delta=delta, seed=seed,
                                  **(gate_kwargs or {}))
    cfg = DSRLConfig(seed=seed, conservative=gate_cfg)
    gate = ChunkGate(cfg, policy)
    rng = np.random.default_rng(seed)
    envs = [LatentNoiseEnv(make_task_env(task), policy, cfg.latent_noise_bound, cfg.reward_offset,
                           fallback_seed=cfg.fallback_seed(i)) for i in range(cfg.num_envs)]
    harmful = np.full((len(envs), policy.cfg.noise_dim), cfg.latent_noise_bound, np.float32)
    next_seed = cfg.train_seed(0)
    for i, e in enumerate(envs):  # the explorer ignores observations: the wrapper keeps what it decodes from
        e.reset(seed=next_seed + i)
    next_seed += len(envs)
    t, env_steps = time.time(), 0
    # Every env keeps running until the gate has recorded enough episodes; those still in flight are dropped.
    while len(gate.gated.records) < episodes:
        w = gate.latents(harmful, lambda: harmful, rng)
        rewards, dones, infos = np.zeros(len(envs)), np.zeros(len(envs), bool), []
        for i, env in enumerate(envs):
            _, rewards[i], term, trunc, info = env.step(w[i])
            env_steps += info["chunk_steps"]
            dones[i] = term or trunc
            infos.append(info)
            if dones[i]:
                env.reset(seed=next_seed)
                next_seed += 1
        gate.record(rewards, dones, infos, env_steps, False, None)
    for e in envs:
        e.close()
    # Ungated (the gate only measures), every episode ran the explorer, also the first ones the gate's
    # records call "baseline" (in training those are the warm-up's).
    records = [[r.env_steps, r.value, r.kind if gated else "explorer", round(r.gate_rho, 4)]
               for r in gate.gated.records[:episodes]]
    return {"gated": gated, "seed": seed, "episodes": records, "env_steps": env_steps, "wall_s": time.time() - t}


def below_threshold(records: list, threshold: float, window: int) -> dict:
    """Window-level and episode-level fractions of training episodes below ``threshold``."""
    values = np.array([r[1] for r in records], dtype=float)
    n_win = len(values) // window
    means = values[:n_win * window].reshape(n_win, window).mean(axis=1) if n_win else np.zeros(0)
    return {"window_frac": float((means < threshold).mean()) if n_win else None, "windows": n_win,
            "episode_frac": float((values < threshold).mean()) if len(values) else None,
            "explorer_share": float(np.mean([r[2] == "explorer" for r in records])) if records else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="push")
    ap.add_argument("--lift-bc", type=Path, default=Path("runs/bench-manipulation/lift-bc"),
                    help="--task lift: the BC run of bench/manipulation.py whose policy is the baseline")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--env-steps", type=int, default=10_000, help="env steps of the ungated runs")
    ap.add_argument("--gated-budget", type=float, default=1.5, help="gated runs get this many times --env-steps")
    ap.add_argument("--eval-every", type=int, default=1_000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--baseline-episodes", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--window", type=int, default=50, help="training episodes per window")
    ap.add_argument("--bc-steps", type=int, default=6_000)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-dsrl"),
                    help="folder of the dataset and BC policy (shared with bench/dsrl.py)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--explorer-window", type=int, default=None,
                    help="the gate's explorer_window (default: the library's)")
    ap.add_argument("--explorer", choices=("deterministic", "stochastic"), default=None,
                    help="what the gated explorer episodes run (default: the library's explorer_deterministic)")
    ap.add_argument("--gate-window", type=int, default=0, metavar="W",
                    help="the gate's guarantee_window: also keep windows of W episodes (0: expectation only)")
    ap.add_argument("--harmful", type=int, default=0, metavar="N",
                    help="instead of DSRL: N training episodes of a deliberately harmful explorer (the constant "
                         "latent +b), gated and ungated, --seeds seeds each")
    ap.add_argument("--out", type=Path, default=None, help="default: results/conservative.json "
                    "(conservative_lift.json with --task lift, conservative_<task>_harmful.json with --harmful; "
                    "_window before .json with --gate-window)")
    args = ap.parse_args()
    for name, value, least in (("--harmful", args.harmful, 0), ("--seeds", args.seeds, 1), ("--window", args.window, 1),
                               ("--gate-window", args.gate_window, 0)):
        if value < least:
            print(f"{name} {value}: expected at least {least}.")
            return 2
    if args.out is None:
        name = "conservative" if args.task == "push" else f"conservative_{args.task}"
        args.out = ROOT / "results" / (name + ("_harmful" if args.harmful else "")
                                       + ("_window" if args.gate_window else "") + ".json")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    task = TASKS[args.task]
    if args.task == "lift":
        ckpt = str(args.lift_bc / "checkpoints")
        if not (Path(ckpt) / "policy.safetensors").exists():
            print(f"{args.lift_bc} has no BC policy: run bench/manipulation.py --tasks lift first.")
            return 2
    else:
        ckpt = str(prepare(args.work, args.bc_steps))
    t0 = time.time()
    if args.harmful:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            base_job = pool.submit(baseline_value, task, ckpt, args.baseline_episodes)
            jobs = [pool.submit(run_harmful, task, gated, seed, ckpt, args.harmful, args.alpha, args.delta,
                                gate_kwargs(args)) for seed in range(args.seeds) for gated in (False, True)]
            results = [j.result() for j in jobs]
            report_harmful(args, base_job.result(), results, t0)
        return 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        base_job = pool.submit(baseline_value, task, ckpt, args.baseline_episodes)
        jobs = [pool.submit(run_one, task, gated, seed, ckpt, budget(args, gated), args.eval_every, args.eval_episodes,
                            args.alpha, args.delta, gate_kwargs(args))
                for seed in range(args.seeds) for gated in (False, True)]
        base = base_job.result()
        results = []
        for j in as_completed(jobs):
            results.append(j.result())
            # Partial results after every run, so a long benchmark always leaves something to read.
            if len(results) < len(jobs) and {r["gated"] for r in results} == {True, False}:
                report(args, base, results, t0, partial=True)
    report(args, base, results, t0, partial=False)
    return 0


def _gate_config(args):
    from steer.agent.conservative import ConservativeConfig

    return ConservativeConfig(variant="epsmix", alpha=args.alpha, delta=args.delta, **gate_kwargs(args))


def gate_kwargs(args) -> dict:
    """Gate settings the command line overrides."""
    out = {}
    if args.explorer_window is not None:
        out["explorer_window"] = args.explorer_window
    if args.explorer is not None:
        out["explorer_deterministic"] = args.explorer == "deterministic"
    if args.gate_window:
        out["guarantee_window"] = args.gate_window
    return out


def budget(args, gated: bool) -> int:
    """Env steps of a run: the gated runs get ``--gated-budget`` times the ungated budget."""
    return int(round(args.env_steps * (args.gated_budget if gated else 1.0)))


def _threshold(args, base: dict) -> tuple[float, float, float]:
    """(L_b, threshold, window noise floor): the baseline's lower bound, (1 − α)·L_b, and how often a window
    of the baseline alone falls under the threshold (sampling error)."""
    from steer.agent.conservative import clopper_pearson_bounds, window_below_prob

    lb, _ = clopper_pearson_bounds(base["successes"], base["episodes"], args.delta)
    threshold = (1 - args.alpha) * lb
    return lb, threshold, window_below_prob(base["success_rate"], threshold, args.window)


def report_harmful(args, base: dict, results: list, t0: float) -> None:
    """Figures, table and JSON of the harmful-explorer runs."""
    from steer.agent.conservative import clopper_pearson_bounds

    lb, threshold, noise_floor = _threshold(args, base)
    figures: dict[str, float | None] = {}
    for r in results:
        r.update(below_threshold(r["episodes"], threshold, args.window))
        values = [e[1] for e in r["episodes"]]
        r["mean_value"] = float(np.mean(values))
        r["mean_value_lower"] = clopper_pearson_bounds(int(sum(values)), len(values), args.delta)[0]
    for name, gated in (("gated", True), ("ungated", False)):
        rs = [r for r in results if r["gated"] == gated]
        figures[f"below_threshold_frac.{name}"] = median_or_none([r["window_frac"] for r in rs])
        figures[f"mean_value.{name}"] = median_or_none([r["mean_value"] for r in rs])
        figures[f"explorer_share.{name}"] = median_or_none([r["explorer_share"] for r in rs])
    figures["threshold"] = threshold
    goal = {"mean_value_at_or_above_threshold": figures["mean_value.gated"] >= threshold,
            "ungated_windows_below": figures["below_threshold_frac.ungated"],
            "window_noise_floor_of_the_baseline": noise_floor,
            "below_threshold_limit": args.delta + noise_floor,
            "below_threshold_met": figures["below_threshold_frac.gated"] <= args.delta + noise_floor}
    print(f"baseline success {base['success_rate']:.2f} (L_b {lb:.2f}), threshold {threshold:.2f}; "
          f"harmful explorer, {args.harmful} training episodes per run, windows of {args.window}")
    print(f"{'':<10} {'below-thr windows':>18} {'mean value':>11} {'explorer share':>15}")
    for name in ("ungated", "gated"):
        print(f"{name:<10} {figures[f'below_threshold_frac.{name}']:>18.3f} {figures[f'mean_value.{name}']:>11.3f} "
              f"{figures[f'explorer_share.{name}']:>15.3f}")
    print(f"goal: gated below-threshold windows ≤ δ + noise = {goal['below_threshold_limit']:.3f} "
          f"({'met' if goal['below_threshold_met'] else 'missed'})")
    write_results(args.out, figures, {
        "task": TASKS[args.task], "explorer": "constant latent +b in every coordinate (deliberately harmful)",
        "baseline": {**base, "lower_bound": lb, "threshold": threshold}, "window_episodes": args.window,
        "window_noise_floor": noise_floor, "alpha": args.alpha, "delta": args.delta, "seeds": args.seeds,
        "episodes_per_run": args.harmful, "gate_config": {k: v for k, v in vars(_gate_config(args)).items()
                                                          if k != "seed"},
        "goal": goal, "wall_s": time.time() - t0, "runs": results})
    print(f"wrote {args.out}")


def report(args, base: dict, results: list, t0: float, partial: bool) -> None:
    """Figures, table and JSON from the finished runs."""
    results = sorted(results, key=lambda r: (r["seed"], r["gated"]))
    lb, threshold, noise_floor = _threshold(args, base)
    for r in results:
        r.update(below_threshold(r["episodes"], threshold, args.window))
    figures = {}
    for name, gated in (("gated", True), ("ungated", False)):
        rs = [r for r in results if r["gated"] == gated]
        figures[f"below_threshold_frac.{name}"] = float(np.median([r["window_frac"] for r in rs]))
        figures[f"final_success.{name}"] = float(np.median([r["final_success"] for r in rs]))
        figures[f"steps_to_0.9.{name}"] = median_or_none([r["steps_to_0.9"] for r in rs])
    ung, gat = figures["final_success.ungated"], figures["final_success.gated"]
    goal = {"below_threshold_limit": args.delta + noise_floor,
            "below_threshold_met": figures["below_threshold_frac.gated"] <= args.delta + noise_floor,
            "final_success_limit": 0.9 * ung, "final_success_met": gat >= 0.9 * ung,
            "budget_ratio": budget(args, True) / budget(args, False)}
    details = {"task": TASKS[args.task], "baseline": {**base, "lower_bound": lb, "threshold": threshold},
               "window_episodes": args.window, "window_noise_floor": noise_floor,
               "alpha": args.alpha, "delta": args.delta, "seeds": args.seeds,
               "env_steps_budget": {"ungated": budget(args, False), "gated": budget(args, True)},
               "goal": goal,
               "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "wall_s": time.time() - t0,
               "gate": "epsmix (ungated runs use 'monitor': same training, only measured)",
               "gate_config": {k: v for k, v in vars(_gate_config(args)).items() if k != "seed"},
               "episode_frac_median": {n: float(np.median([r["episode_frac"] for r in results if r["gated"] == g]))
                                       for n, g in (("gated", True), ("ungated", False))},
               "complete": not partial, "runs_finished": len(results), "runs": results}
    if partial:
        print(f"partial: {len(results)} runs finished")
    print(f"baseline success {base['success_rate']:.2f} (L_b {lb:.2f}), threshold {threshold:.2f}, "
          f"window noise floor {noise_floor:.3f}")
    print(f"{'':<10} {'below-thr windows':>18} {'final success':>14} {'steps to 0.9':>13}")
    for name in ("ungated", "gated"):
        s = figures[f"steps_to_0.9.{name}"]
        print(f"{name:<10} {figures[f'below_threshold_frac.{name}']:>18.3f} {figures[f'final_success.{name}']:>14.2f} "
              f"{('not reached' if s is None else f'{s:,.0f}'):>13}")
    print(f"goal: below-threshold ≤ δ + noise = {goal['below_threshold_limit']:.3f} "
          f"({'met' if goal['below_threshold_met'] else 'missed'}); gated final ≥ 0.9 × ungated = "
          f"{goal['final_success_limit']:.2f} within {goal['budget_ratio']:.1f}× the env steps "
          f"({'met' if goal['final_success_met'] else 'missed'})")
    write_results(args.out, figures, details)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
