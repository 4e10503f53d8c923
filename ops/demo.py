"""``steer demo``: the whole DSRL path on the default task, end to end.

Stages, each in its own folder under ``--out``: scripted demonstrations (``data/``),
BC diffusion policy (``bc/``), DSRL-SAC over its latent noise (``dsrl/``); then
``report.png`` and ``summary.json``. With ``--resume`` finished stages are skipped
and an interrupted DSRL run continues from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from steer.agent.bc import BCConfig
from steer.agent.checkpoint import atomic_write_json
from steer.agent.dsrl import DSRLConfig
from steer.ops.run import RunError, to_jsonable
from steer.ops.train_cmd import BCCommand, CollectConfig, DSRLCommand, collect, run_bc, run_dsrl


@dataclass(frozen=True)
class DemoConfig:
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on the default task."""

    out: Path | None = None
    """Output folder; default runs/demo-<date>-<time>."""
    resume: bool = False
    """Skip finished stages of an existing --out and continue an interrupted DSRL run."""
    seed: int = 0
    """Seed of BC, DSRL and the policy noise; demos use seeds from 1000, evaluation from 1,000,000."""
    demos: int = 200
    """Scripted demonstrations to collect."""
    eval_episodes: int = 100
    """Held-out evaluation episodes for BC and for DSRL."""
    bc: BCConfig = BCConfig()
    """BC hyperparameters."""
    dsrl: DSRLConfig = DSRLConfig()
    """DSRL hyperparameters (DSRL-SAC by default)."""


def run_demo(cfg: DemoConfig, progress: bool = True) -> dict:
    """Run the demo and return its summary (also written to ``<out>/summary.json``)."""
    from steer.ops.report import dsrl_report

    out = cfg.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise RunError(f"{out} already holds a demo; pass --resume to continue it or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_jsonable(cfg))
    t0 = time.time()
    data = out / "data"
    if not (data / "done").exists():
        collect(CollectConfig(out=data, episodes=cfg.demos, seed=1000))
        (data / "done").write_text("ok\n")
    bc_cmd = BCCommand(data=data, name="bc", runs=out, eval_episodes=cfg.eval_episodes,
                       bc=replace(cfg.bc, seed=cfg.seed), resume=cfg.resume and (out / "bc").exists())
    if (out / "bc" / "summary.json").exists():
        bc_summary = json.loads((out / "bc" / "summary.json").read_text())
    else:
        bc_summary = run_bc(bc_cmd, progress=progress)
    dsrl_cmd = DSRLCommand(policy=out / "bc", name="dsrl", runs=out, eval_episodes=cfg.eval_episodes,
                           dsrl=replace(cfg.dsrl, seed=cfg.seed), resume=cfg.resume and (out / "dsrl").exists())
    if (out / "dsrl" / "summary.json").exists():
        dsrl_summary = json.loads((out / "dsrl" / "summary.json").read_text())
    else:
        dsrl_summary = run_dsrl(dsrl_cmd, progress=progress)
    bc_eval, dsrl_eval = bc_summary["eval"], dsrl_summary["eval"]
    report = dsrl_report(out / "dsrl", bc_eval["success_rate"], out / "report.png",
                         final_success=dsrl_eval["success_rate"])
    summary = {
        "task": bc_summary["task"], "seed": cfg.seed,
        "bc": {k: bc_eval[k] for k in ("success_rate", "return_mean", "episodes")},
        "dsrl": {**{k: dsrl_eval[k] for k in ("success_rate", "return_mean", "episodes")},
                 "env_steps": dsrl_summary["env_steps"], "algorithm": dsrl_summary["algorithm"]},
        "demos": {"episodes": bc_summary["demos"], "success_rate": bc_summary["demo_success_rate"]},
        "report": str(report), "wall_s": time.time() - t0,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def demo(cfg: DemoConfig) -> int:
    """Run the whole DSRL path (demos, BC, DSRL, evaluation, report) on the default task."""
    s = run_demo(cfg)
    out = Path(s["report"]).parent
    print(f"\nBC   success {s['bc']['success_rate']:.2f} ({s['bc']['episodes']} held-out episodes)\n"
          f"DSRL success {s['dsrl']['success_rate']:.2f} after {s['dsrl']['env_steps']} env steps "
          f"({s['dsrl']['algorithm']})\nwall time {s['wall_s'] / 60:.1f} min; report {s['report']}; "
          f"summary {out / 'summary.json'}")
    return 0
