"""``steer demo``: the whole DSRL path on a task (PlanarPush by default, or Lift or Can), end to end.

Stages, each in its own folder under ``--out``: scripted demonstrations (``data/``),
BC diffusion policy (``bc/``), DSRL over its latent noise (``dsrl/``; the task's preset,
agent/presets.py: DSRL-SAC on PlanarPush and Lift, DSRL-NA on Can, whose Q_A also learns from the
demonstrations), the DSRL policy exported to ``policy.onnx`` and
checked against torch, closed-loop episodes of that file over DDS between a simulated robot
and the policy node (two processes, ``bags/``; PlanarPush only: the simulated robot is its
pusher); then ``report.png`` and ``summary.json``. With ``--resume`` finished stages are skipped
and an interrupted DSRL run continues from its last checkpoint. The stages are
:mod:`steer.ops.stages`; this module only composes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from steer.agent.bc import BCConfig
from steer.agent.dsrl import DSRLConfig
from steer.agent.runlog import atomic_write_json, to_jsonable
from steer.ops.run import RunError
from steer.ops.stages import (DEFAULT_TASK, BCResult, BCRunConfig, CollectConfig, DSRLResult, DSRLRunConfig,
                              collect_demos, export_checked, finished, robot_loop, run_bc, run_dsrl)

DEMO_EPISODES = {DEFAULT_TASK: 400, "steer/Lift-v0": 200, "steer/Can-v0": 200}
"""Demonstrations ``steer demo`` collects per task when ``--demos`` is not given."""


@dataclass(frozen=True)
class DemoConfig:
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on a task."""

    task: str = DEFAULT_TASK
    """Task: steer/PlanarPush-v0, steer/Lift-v0 or steer/Can-v0 (robosuite; DSRL takes the task's preset, and
    the DDS robot loop runs on PlanarPush only)."""
    out: Path | None = None
    """Output folder; default runs/demo-<date>-<time>."""
    resume: bool = False
    """Skip finished stages of an existing --out and continue an interrupted DSRL run."""
    seed: int = 0
    """Seed of BC, DSRL and the policy noise; demos use seeds from 1000, evaluation from 1,000,000."""
    demos: int | None = field(default=None, metadata={"range": "[1, inf)"})
    """Scripted demonstrations to collect, half of them from the imperfect operator (default: 400 on
    PlanarPush, 200 on Lift and Can)."""
    eval_episodes: int = 100
    """Held-out evaluation episodes for BC and for DSRL."""
    robot_episodes: int = 20
    """Closed-loop episodes of the exported policy over DDS (0 to skip; PlanarPush only)."""
    bc: BCConfig = BCConfig()
    """BC hyperparameters."""
    dsrl: DSRLConfig = DSRLConfig()
    """DSRL hyperparameters (settings left at their defaults come from the task's preset)."""


def run_demo(cfg: DemoConfig, progress: bool = True) -> dict:
    """Run the demo and return its summary (also written to ``<out>/summary.json``)."""
    from steer.ops.report import dsrl_report

    if cfg.eval_episodes < 1:
        raise RunError(f"--eval-episodes must be at least 1 (the demo compares BC and DSRL), got {cfg.eval_episodes}.")
    from steer.sim.expert import EXPERT_TASKS

    if cfg.task not in EXPERT_TASKS:  # before anything is created
        raise RunError(f"--task {cfg.task} has no scripted expert; choose one of {', '.join(EXPERT_TASKS)}.")
    out = cfg.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise RunError(f"{out} already holds a demo; pass --resume to continue it or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_jsonable(cfg))
    t0 = time.time()
    data = out / "data"
    if not (data / "done").exists():
        episodes = cfg.demos or DEMO_EPISODES.get(cfg.task, 200)
        collect_demos(CollectConfig(out=data, episodes=episodes, seed=1000, task=cfg.task,
                                    overwrite=True))  # an unfinished one
        (data / "done").write_text("ok\n")
    bc = finished(out / "bc", BCResult) or run_bc(
        BCRunConfig(data=data, name="bc", runs=out, eval_episodes=cfg.eval_episodes, bc=replace(cfg.bc, seed=cfg.seed),
                    resume=cfg.resume and (out / "bc").exists()), progress=progress)
    dsrl = finished(out / "dsrl", DSRLResult) or run_dsrl(
        DSRLRunConfig(policy=out / "bc", name="dsrl", runs=out, eval_episodes=cfg.eval_episodes,
                      dsrl=replace(cfg.dsrl, seed=cfg.seed, na_prefill_demos=cfg.dsrl.na_prefill_demos or str(data)),
                      resume=cfg.resume and (out / "dsrl").exists()),
        progress=progress)
    export = export_checked(out / "dsrl", out / "policy.onnx")
    loop = (robot_loop(out / "policy.onnx", cfg.robot_episodes, out / "bags", progress)
            if cfg.robot_episodes > 0 and cfg.task == DEFAULT_TASK else None)
    report = dsrl_report(out / "dsrl", bc.eval.success_rate, out / "report.png", title=f"DSRL on {bc.task}",
                         final_success=dsrl.eval.success_rate, final_episodes=dsrl.eval.episodes)
    summary = {
        "task": bc.task, "seed": cfg.seed,
        "bc": {"success_rate": bc.eval.success_rate, "return_mean": bc.eval.return_mean, "episodes": bc.eval.episodes},
        "dsrl": {"success_rate": dsrl.eval.success_rate, "return_mean": dsrl.eval.return_mean,
                 "episodes": dsrl.eval.episodes, "env_steps": dsrl.env_steps, "algorithm": dsrl.algorithm},
        "demos": {"episodes": bc.demos, "success_rate": bc.demo_success_rate},
        "export": to_jsonable(export),
        "report": str(report), "wall_s": time.time() - t0,
    }
    if loop is not None:
        summary["robot_loop"] = loop
    atomic_write_json(out / "summary.json", summary)
    return summary


def demo(cfg: DemoConfig) -> int:
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on a task."""
    s = run_demo(cfg)
    out = Path(s["report"]).parent
    print(f"\nBC   success {s['bc']['success_rate']:.2f} ({s['bc']['episodes']} held-out episodes)\n"
          f"DSRL success {s['dsrl']['success_rate']:.2f} after {s['dsrl']['env_steps']} env steps "
          f"({s['dsrl']['algorithm']})\nONNX export: max |onnx - torch| {s['export']['max_abs_diff']:.1e}, "
          f"p50 {s['export']['latency_ms_p50']:.2f} ms"
          + (f"\nrobot loop over DDS: success {s['robot_loop']['success_rate']:.2f} in "
             f"{s['robot_loop']['episodes']} episodes (in-process {s['robot_loop']['in_process_success_rate']:.2f}), "
             f"latency p99 {s['robot_loop']['latency_ms_p99']:.2f} ms" if "robot_loop" in s else "")
          + f"\nwall time {s['wall_s'] / 60:.1f} min; report {s['report']}; "
          f"summary {out / 'summary.json'}")
    return 0
