"""``steer demo``: the whole DSRL path on the default task, end to end.

Stages, each in its own folder under ``--out``: scripted demonstrations (``data/``),
BC diffusion policy (``bc/``), DSRL-SAC over its latent noise (``dsrl/``), the DSRL
policy exported to ``policy.onnx`` and checked against torch, closed-loop episodes of
that file over DDS between a simulated robot and the policy node (two processes,
``bags/``); then ``report.png`` and ``summary.json``. With ``--resume`` finished stages are skipped
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
    demos: int = 400
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
    export = _export_stage(out)
    robot_loop = _robot_stage(out, cfg.robot_episodes, progress) if cfg.robot_episodes > 0 else None
    report = dsrl_report(out / "dsrl", bc_eval["success_rate"], out / "report.png",
                         final_success=dsrl_eval["success_rate"], final_episodes=dsrl_eval["episodes"])
    summary = {
        "task": bc_summary["task"], "seed": cfg.seed,
        "bc": {k: bc_eval[k] for k in ("success_rate", "return_mean", "episodes")},
        "dsrl": {**{k: dsrl_eval[k] for k in ("success_rate", "return_mean", "episodes")},
                 "env_steps": dsrl_summary["env_steps"], "algorithm": dsrl_summary["algorithm"]},
        "demos": {"episodes": bc_summary["demos"], "success_rate": bc_summary["demo_success_rate"]},
        "export": export,
        "report": str(report), "wall_s": time.time() - t0,
    }
    if robot_loop is not None:
        summary["robot_loop"] = robot_loop
    atomic_write_json(out / "summary.json", summary)
    return summary


def _export_stage(out: Path) -> dict:
    """Export the DSRL policy, check parity on 1,000 observations, time batch-1 inference."""
    import numpy as np
    import onnxruntime as ort

    from steer.agent.export import export_run, parity

    onnx_path = out / "policy.onnx"
    export_run(out / "dsrl", onnx_path)
    diff = parity(out / "dsrl", onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    obs = np.zeros((1, sess.get_inputs()[0].shape[1]), np.float32)
    times = []
    for _ in range(300):
        t = time.perf_counter()
        sess.run(["action"], {"obs": obs})
        times.append(time.perf_counter() - t)
    return {"onnx": str(onnx_path), "max_abs_diff": diff, "latency_ms_p50": float(np.median(times) * 1e3)}


def _robot_stage(out: Path, episodes: int, progress: bool) -> dict:
    """Closed-loop episodes of the exported policy over DDS, compared with in-process runs on the same seeds."""
    from steer.agent.evaluate import EVAL_SEED_BASE
    from steer.robot.closed_loop import evaluate_in_process, run_closed_loop

    seed = EVAL_SEED_BASE + 900_000  # held out from training and from the evaluations above
    loop = run_closed_loop(out / "policy.onnx", episodes=episodes, seed=seed, bag_dir=out / "bags",
                           progress=progress)
    ref_rate, _, _ = evaluate_in_process(out / "policy.onnx", episodes=episodes, seed=seed)
    return {**loop.as_summary(), "latency_ms_p50": loop.latency_ms_p50, "missed_deadlines": loop.missed_deadlines,
            "in_process_success_rate": ref_rate, "seed": seed}


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
