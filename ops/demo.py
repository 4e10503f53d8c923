"""``steer demo``: the whole DSRL path on the default task, end to end.

Stages, each in its own folder under ``--out``: scripted demonstrations (``data/``),
BC diffusion policy (``bc/``), DSRL-SAC over its latent noise (``dsrl/``), the DSRL
policy exported to ``policy.onnx`` and checked against torch, closed-loop episodes of
that file over DDS between a simulated robot and the policy node (two processes,
``bags/``); then ``report.png`` and ``summary.json``. With ``--resume`` finished stages are skipped
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
from steer.ops.stages import (BCResult, BCRunConfig, CollectConfig, DSRLResult, DSRLRunConfig, collect_demos,
                              export_checked, finished, robot_loop, run_bc, run_dsrl)


@dataclass(frozen=True)
class DemoConfig:
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on the default task."""

    out: Path | None = None
    """Output folder; default runs/demo-<date>-<time>."""
    resume: bool = False
    """Skip finished stages of an existing --out and continue an interrupted DSRL run."""
    seed: int = 0
    """Seed of BC, DSRL and the policy noise; demos use seeds from 1000, evaluation from 1,000,000."""
    demos: int = field(default=400, metadata={"range": "[1, inf)"})
    """Scripted demonstrations to collect (half of them from the mirrored operator)."""
    eval_episodes: int = 100
    """Held-out evaluation episodes for BC and for DSRL."""
    robot_episodes: int = 20
    """Closed-loop episodes of the exported policy over DDS (0 to skip)."""
    bc: BCConfig = BCConfig()
    """BC hyperparameters."""
    dsrl: DSRLConfig = DSRLConfig()
    """DSRL hyperparameters (DSRL-SAC by default)."""


def run_demo(cfg: DemoConfig, progress: bool = True) -> dict:
    """Run the demo and return its summary (also written to ``<out>/summary.json``)."""
    from steer.ops.report import dsrl_report

    if cfg.eval_episodes < 1:
        raise RunError(f"--eval-episodes must be at least 1 (the demo compares BC and DSRL), got {cfg.eval_episodes}.")
    out = cfg.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise RunError(f"{out} already holds a demo; pass --resume to continue it or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_jsonable(cfg))
    t0 = time.time()
    data = out / "data"
    if not (data / "done").exists():
        collect_demos(CollectConfig(out=data, episodes=cfg.demos, seed=1000, overwrite=True))  # an unfinished one
        (data / "done").write_text("ok\n")
    bc = finished(out / "bc", BCResult) or run_bc(
        BCRunConfig(data=data, name="bc", runs=out, eval_episodes=cfg.eval_episodes, bc=replace(cfg.bc, seed=cfg.seed),
                    resume=cfg.resume and (out / "bc").exists()), progress=progress)
    dsrl = finished(out / "dsrl", DSRLResult) or run_dsrl(
        DSRLRunConfig(policy=out / "bc", name="dsrl", runs=out, eval_episodes=cfg.eval_episodes,
                      dsrl=replace(cfg.dsrl, seed=cfg.seed), resume=cfg.resume and (out / "dsrl").exists()),
        progress=progress)
    export = export_checked(out / "dsrl", out / "policy.onnx")
    loop = robot_loop(out / "policy.onnx", cfg.robot_episodes, out / "bags", progress) if cfg.robot_episodes > 0 else None
    report = dsrl_report(out / "dsrl", bc.eval.success_rate, out / "report.png",
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
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on the default task."""
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
