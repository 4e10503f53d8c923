"""DSRL over the wire: PlanarPush BC → adapted on a simulated robot by `steer adapt`, three processes over DDS.

Per variant: `steer robot sim` (seeds from 10,000), `steer robot run --steered` on the BC policy's ONNX and
`steer adapt` (DSRL-SAC, its defaults: UTD 8, EpsMix gate with the baseline measured on the robot), each its
own process on one DDS domain on loopback; this script is the operator (signed arm and adapt_start). Variants:
``clean`` and ``impaired`` (the learner's latents held 20 ms, 5 % of the messages it sends and receives
dropped). After the env-step budget the learner runs ``--eval-episodes`` episodes with its deterministic actor
(`success.adapted`). ``--time-scale`` > 1 runs robot and node faster than real time (RobotConfig.time_scale).

Figures (medians over variants where both ran; per variant in details):
``success.bc`` (the BC run's held-out evaluation), ``success.adapted`` (deterministic actor over the wire),
``env_steps`` (to a success rate ≥ 0.9 over the last 20 explorer episodes, or the budget if never),
``episodes``, ``steps_ratio_vs_in_process`` (env_steps / the in-process DSRL run's steps to 0.9 with the same
gate: ``--in-process-steps``, default from bench/results/conservative.json), ``late_latent_frac`` (late
latents / chunks the node ran), ``obs_to_command_p99_ms`` (the robot's joint state → command round trip),
``wall_minutes``.

    python bench/adapt.py --bc runs/adapt-bench/bc --onnx runs/adapt-bench/bc.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
IMPAIRED = ["--impair-delay-ms", "20", "--impair-drop", "0.05"]


def _steps_to(curve: list, level: float = 0.9, window: int = 20):
    """Env steps after which the last ``window`` explorer episodes succeed ≥ ``level`` (None: never)."""
    recent: list[float] = []
    for steps, success, plan in curve:
        if plan != "explorer":
            continue
        recent = (recent + [success])[-window:]
        if len(recent) == window and np.mean(recent) >= level:
            return int(steps)
    return None


def run_variant(name: str, args, domain: int, work: Path) -> dict:
    from steer.robot.closed_loop import send_signed_command
    from steer.robot.config import load_robot_config
    from steer.robot.dds_transport import DdsTransport, use_loopback_config
    from steer.robot.keys import init_keys, load_private_key, public_key_hex
    from steer.robot.promotion import file_sha256

    env = dict(os.environ, PYTHONUNBUFFERED="1", CYCLONEDDS_URI=use_loopback_config())
    key = load_private_key(init_keys(work / f"key-{name}")[0])
    robot = {"trusted_operator_keys": [public_key_hex(key.public_key())], "time_scale": args.time_scale}
    py = sys.executable
    nice = ["nice", "-n", str(args.nice)]
    logs = {k: open(work / f"{name}-{k}.log", "w") for k in ("sim", "node", "learner")}
    node = subprocess.Popen(nice + [py, "-m", "steer.robot.processes", "node", json.dumps(
        {"robot": robot, "policy": str(args.onnx), "domain_id": domain, "steered": True,
         "stats": str(work / f"{name}-node.json"), "status_every_s": 30})], env=env, stderr=logs["node"])
    sim = subprocess.Popen(nice + [py, "-m", "steer.robot.processes", "sim", json.dumps(
        {"robot": robot, "domain_id": domain, "episodes": 0, "seed": 10_000, "wait_for_node_s": 120.0,
         "results": str(work / f"{name}-sim.json"), "status_every_s": 30})], env=env, stderr=logs["sim"])
    run_name = f"adapt-{name}"
    learner = subprocess.Popen(nice + [py, "-m", "steer.ops.cli", "adapt", "--policy", str(args.bc), "--domain-id",
                                       str(domain), "--name", run_name, "--runs", str(args.runs), "--no-progress",
                                       "--dsrl.env-steps", str(args.env_steps), "--eval-episodes",
                                       str(args.eval_episodes), "--max-wall-s", str(args.max_wall_min * 60)]
                               + (IMPAIRED if name == "impaired" else []), env=env, stdout=logs["learner"],
                               stderr=subprocess.STDOUT)
    t0 = time.time()
    transport = DdsTransport(domain)
    try:
        config = load_robot_config()
        sha = file_sha256(args.onnx)
        send_signed_command(transport, config, key, "arm", sha, until=lambda s: s.armed, timeout_s=120,
                            alive=lambda: node.poll() is None)
        send_signed_command(transport, config, key, "adapt_start", sha, args={"session": run_name},
                            until=lambda s: s.adapt_session == run_name, timeout_s=60,
                            alive=lambda: node.poll() is None)
        learner.wait()
    finally:
        for p in (node, sim):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (node, sim, learner):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        transport.close()
    summary = json.loads((args.runs / run_name / "summary.json").read_text())
    node_stats = json.loads((work / f"{name}-node.json").read_text())
    sim_stats = json.loads((work / f"{name}-sim.json").read_text())
    chunks = node_stats["latents_used"] + node_stats["latents_fallback"]
    steps_to = _steps_to(summary["curve"])
    return {"variant": name, "env_steps_to_0.9": steps_to, "env_steps": summary["env_steps"],
            "episodes": summary["episodes"], "success_adapted": summary["eval_success"],
            "eval_episodes": summary["eval_episodes"], "baseline_success_lower": summary["baseline_success"],
            "late_latent_frac": node_stats["latents_late"] / max(chunks, 1),
            "fallback_frac": node_stats["latents_fallback"] / max(chunks, 1),
            "obs_to_command_p99_ms": sim_stats["latency_p99_ms"], "node_latency_p99_ms": node_stats.get(
                "latency_p99_ms"), "discarded": summary["discarded"], "wall_minutes": (time.time() - t0) / 60,
            "curve": summary["curve"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bc", type=Path, required=True, help="BC run directory (steer bc)")
    ap.add_argument("--onnx", type=Path, required=True, help="its ONNX export (steer export)")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-adapt"))
    ap.add_argument("--env-steps", type=int, default=22_500, help="budget per variant (1.5x the in-process 15k)")
    ap.add_argument("--eval-episodes", type=int, default=30)
    ap.add_argument("--variants", default="clean,impaired")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--max-wall-min", type=float, default=80.0, help="per variant; the learner stops there")
    ap.add_argument("--in-process-steps", type=float, default=None)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--domain", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "adapt.json")
    args = ap.parse_args()
    ref = args.in_process_steps
    if ref is None:
        ref = json.loads((ROOT / "results" / "conservative.json").read_text())["figures"]["steps_to_0.9.gated"]
    bc = json.loads((args.bc / "summary.json").read_text())["eval"]["success_rate"]
    work = Path(tempfile.mkdtemp(prefix="steer-bench-adapt-"))
    t0 = time.time()
    results = []
    for i, name in enumerate(args.variants.split(",")):
        results.append(run_variant(name, args, args.domain + i, work))
        report(args, bc, ref, results, t0)


def report(args, bc: float, ref: float, results: list, t0: float) -> None:
    def med(key):
        vals = [r[key] for r in results if r[key] is not None]
        return float(np.median(vals)) if vals else None

    clean = next((r for r in results if r["variant"] == "clean"), results[0])
    reached = clean["env_steps_to_0.9"]
    figures = {"success.bc": bc, "success.adapted": clean["success_adapted"],
               "env_steps": reached if reached is not None else clean["env_steps"], "episodes": clean["episodes"],
               "steps_ratio_vs_in_process": (reached / ref) if reached is not None else None,
               "late_latent_frac": med("late_latent_frac"), "obs_to_command_p99_ms": med("obs_to_command_p99_ms"),
               "wall_minutes": (time.time() - t0) / 60}
    for r in results:
        if r["variant"] != "clean":
            steps = r["env_steps_to_0.9"]
            figures[f"success.adapted.{r['variant']}"] = r["success_adapted"]
            figures[f"steps_ratio_vs_in_process.{r['variant']}"] = steps / ref if steps is not None else None
    print(f"{'variant':<10} {'steps to 0.9':>13} {'env steps':>10} {'episodes':>9} {'adapted':>8} {'late':>6} "
          f"{'p99 ms':>7} {'min':>6}")
    for r in results:
        s = r["env_steps_to_0.9"]
        print(f"{r['variant']:<10} {('not reached' if s is None else f'{s:,}'):>13} {r['env_steps']:>10,} "
              f"{r['episodes']:>9} {str(r['success_adapted']):>8} {r['late_latent_frac']:>6.3f} "
              f"{r['obs_to_command_p99_ms']:>7.1f} {r['wall_minutes']:>6.1f}")
    print(f"BC {bc:.2f}; in-process steps to 0.9 (gated): {ref:,.0f}")
    doc = {"figures": figures,
           "details": {"in_process_steps_to_0.9": ref, "time_scale": args.time_scale, "env_steps_budget": args.env_steps,
                       "runs": results},
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None},
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.parent.mkdir(exist_ok=True, parents=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
