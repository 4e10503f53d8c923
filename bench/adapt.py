"""DSRL over the wire: PlanarPush BC → adapted on a simulated robot by `steer adapt`, three processes over DDS.

Per variant: `steer robot sim` (seeds from 10,000), `steer robot run --steered` on the BC policy's ONNX and
`steer adapt` (DSRL-SAC, its defaults: UTD 8, EpsMix gate with the baseline measured on the robot), each its
own process on one DDS domain on loopback; this script is the operator (signed arm and adapt_start). Variants:
``clean`` and ``impaired`` (the learner's latents held 20 ms, 5 % of the messages it sends and receives
dropped). After the env-step budget the learner runs ``--eval-episodes`` episodes with its deterministic actor
(`success.adapted`). ``--time-scale`` > 1 runs robot and node faster than real time (RobotConfig.time_scale).

Figures (medians over variants where both ran; per variant in details):
``success.bc`` (the BC run's held-out evaluation), ``success.adapted`` (deterministic actor over the wire),
``env_steps`` (to ≥ 0.9 success of the learned actor, evaluated at every checkpoint (2,000 env steps) on the
in-process curve seeds as the in-process run is; the budget if never),
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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import write_results  # noqa: E402  (bench/ is on sys.path when run as a script)

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


class CheckpointCurve:
    """The learning curve as in process: every new checkpoint's deterministic actor evaluated on the in-process
    curve seeds (50 episodes of the task in this process), so steps to 0.9 compare with the in-process run's."""

    def __init__(self, bc: Path, ckpt_dir: Path, episodes: int):
        import threading

        self.bc, self.ckpt_dir, self.episodes = bc, ckpt_dir, episodes
        self.curve: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        seen = None
        while not self._stop.wait(5.0):
            meta = self.ckpt_dir / "adapt_trainer.json"
            try:
                stamp = meta.stat().st_mtime
            except OSError:
                continue
            if stamp != seen:
                seen = stamp
                try:
                    self.curve.append(self.evaluate())
                except Exception as err:  # noqa: BLE001 - a checkpoint replaced while read: take the next one
                    print(f"curve: checkpoint skipped ({type(err).__name__}: {err})", flush=True)

    def evaluate(self) -> list[float]:
        import torch

        import steer.sim  # noqa: F401
        from steer.agent.checkpoint import load_checkpoint
        from steer.agent.dsrl.core import CURVE_SEED_BASE, LatentPolicyFn
        from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig
        from steer.agent.evaluate import evaluate_chunked
        from steer.ops.stages import load_bc_run

        torch.set_num_threads(1)
        policy, _ = load_bc_run(self.bc)
        state, meta = load_checkpoint(self.ckpt_dir, "adapt_trainer")
        c = meta["config"]
        actor = LatentActor(LatentActorConfig(policy.cfg.obs_dim, policy.cfg.noise_dim, c["hidden_dim"],
                                              c["num_layers"], c["layer_norm"], c["latent_noise_bound"]))
        sb3 = state["policy"]
        actor.load_state_dict({k[len("actor."):]: v for k, v in sb3.items()
                               if k.startswith(("actor.latent_pi.", "actor.mu."))})
        res = evaluate_chunked("steer/PlanarPush-v0", LatentPolicyFn(policy, actor.eval()), self.episodes,
                               seed=CURVE_SEED_BASE)
        print(f"curve: {meta['env_steps']} env steps -> {res.success_rate:.2f}", flush=True)
        return [int(meta["env_steps"]), float(res.success_rate)]

    def close(self) -> list[list[float]]:
        self._stop.set()
        self._thread.join(timeout=600)
        return sorted(self.curve)


def _summary(run: Path, log: str) -> dict:
    """The learner's summary.json, or what its metrics show when it did not finish (the log says why)."""
    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = next((r for r in reversed(records) if "charts/episodes" in r), {"step": 0, "charts/episodes": 0})
    print(f"the learner did not finish (see {log}); figures from its metrics", flush=True)
    return {"env_steps": last["step"], "episodes": int(last["charts/episodes"]), "eval_success": None,
            "eval_episodes": 0, "baseline_success": None, "discarded": None, "curve": [], "unfinished": True}


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
    curve = CheckpointCurve(args.bc, args.runs / run_name / "checkpoints", args.curve_episodes)
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
    summary = _summary(args.runs / run_name, logs["learner"].name)
    node_stats = json.loads((work / f"{name}-node.json").read_text())
    sim_stats = json.loads((work / f"{name}-sim.json").read_text())
    chunks = node_stats["latents_used"] + node_stats["latents_fallback"]
    eval_curve = curve.close()
    steps_to = next((s for s, success in eval_curve if success >= 0.9), None)
    return {"variant": name, "env_steps_to_0.9": steps_to, "env_steps": summary["env_steps"],
            "episodes": summary["episodes"], "success_adapted": summary["eval_success"],
            "eval_episodes": summary["eval_episodes"], "baseline_success_lower": summary["baseline_success"],
            "late_latent_frac": node_stats["latents_late"] / max(chunks, 1),
            "fallback_frac": node_stats["latents_fallback"] / max(chunks, 1),
            "obs_to_command_p99_ms": sim_stats["latency_p99_ms"], "node_latency_p99_ms": node_stats.get(
                "latency_p99_ms"), "discarded": summary["discarded"], "wall_minutes": (time.time() - t0) / 60,
            "explorer_steps_to_0.9": _steps_to(summary["curve"]), "eval_curve": eval_curve,
            "latents": {k: node_stats[k] for k in ("latents_used", "latents_fallback", "latents_late")},
            "watchdog_trips": node_stats.get("watchdog_trips"), "curve": summary["curve"]}


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
    ap.add_argument("--parallel", action="store_true", help="run the variants at the same time")
    ap.add_argument("--curve-episodes", type=int, default=50, help="in-process episodes per checkpoint evaluated")
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
    names = args.variants.split(",")
    if args.parallel:  # the variants at once, each in its own DDS domain (they share the cores)
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(len(names)) as pool:
            jobs = [pool.submit(run_variant, name, args, args.domain + i, work) for i, name in enumerate(names)]
            for job in as_completed(jobs):
                results.append(job.result())
                report(args, bc, ref, results, t0)
    else:
        for i, name in enumerate(names):
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
    write_results(args.out, figures, {"in_process_steps_to_0.9": ref, "time_scale": args.time_scale,
                                      "env_steps_budget": args.env_steps, "runs": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
