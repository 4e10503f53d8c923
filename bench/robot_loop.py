"""Benchmark: the robot control loop across processes over DDS, at 100 Hz.

The simulated PlanarPush robot (real MuJoCo, one physics step per tick) publishes its
joint states at 100 Hz; the policy node (onnxruntime, chunked policy, safety shield)
answers each with a command. Measured at the robot: observation published → command
received (both DDS hops, inference and shield; the node ticks on the observation, so
there is no wait for a tick in it), tick jitter, and missed deadlines (ticks whose
command had not arrived when the next physics step was due).

The peer is the transport floor: an echo process that answers each joint state with a
fixed command (no policy, no shield). Ours and the peer alternate, several repeats.
All processes run under SCHED_FIFO (``--rt-priority``, as control loops on robots do);
``--rt-priority 0`` measures under the normal scheduler, where other load on the
machine shows up in the p99.

    python bench/robot_loop.py                    # 60 s of ours (3 x 20 s) + 3 x 10 s of the echo
    python bench/robot_loop.py --seconds 6 --repeats 2 --rt-priority 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
import yaml

RATE_HZ = 100.0
RESULTS = Path(__file__).resolve().parent / "results" / "robot_loop.json"


def _limits_yaml(work: Path) -> str:
    from steer.robot.config import default_config_path

    data = yaml.safe_load(default_config_path().read_text())
    # 100 Hz: watchdog and command timeout scaled to a few periods.
    data.update(control_rate_hz=RATE_HZ, watchdog_ms=25.0, command_timeout_ms=30.0)
    for joint in data["command_joints"]:
        joint["command_rate_max"] = 60.0
    path = work / "limits_100hz.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _policy(work: Path, rate_hz: float = RATE_HZ) -> str:
    """A linear chunked policy (chunk 4) in the steer.policy/1 format, at ``rate_hz`` (100 Hz)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from steer.robot.spec import SPEC_KEY, PolicySpec

    names = ["pusher_x.pos", "pusher_y.pos", "puck_x.pos", "puck_y.pos", "pusher_x.vel", "pusher_y.vel",
             "puck_x.vel", "puck_y.vel", "goal.x", "goal.y"]
    gain = np.zeros((10, 2), np.float32)
    gain[0, 0] = gain[1, 1] = -1.0  # drift towards the origin, slowly: the loop, not the task, is measured
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["a"]), helper.make_node("Unsqueeze", ["a", "ax"], ["a3"]),
         helper.make_node("Tile", ["a3", "reps"], ["action"])], "bench_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 4, 2])],
        [numpy_helper.from_array(gain, "W"), numpy_helper.from_array(np.array([1], np.int64), "ax"),
         numpy_helper.from_array(np.array([1, 4, 1], np.int64), "reps")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = PolicySpec(kind="dsrl", task="steer/PlanarPush-v0", obs_names=tuple(names),
                      action_names=("pusher_x", "pusher_y"), obs_dim=10, action_dim=2, chunk_len=4, noise_input=False,
                      control_rate_hz=rate_hz, action_low=(-0.3, -0.3), action_high=(0.3, 0.3), source_run="bench")
    helper.set_model_props(model, {SPEC_KEY: spec.to_json()})
    path = work / "bench_policy.onnx"
    onnx.save(model, str(path))
    return str(path)


def _echo(domain: int, seconds: float, rt: int) -> None:
    """The peer: answer every joint state with a fixed command, nothing else."""
    from steer.robot import messages as m
    from steer.robot.dds_transport import DdsTransport
    from steer.robot.processes import set_realtime_priority

    set_realtime_priority(rt)
    t = DdsTransport(domain)
    sub = t.subscription("/joint_states", m.JointState)
    # Also read what the robot waits for a node to read, or it would not start.
    others = [t.subscription("/goal", m.Float64MultiArray), t.subscription("/episode", m.DiagnosticStatus)]
    pub = t.publisher("/pusher_velocity_controller/commands", m.Float64MultiArray)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t.wait(0.01)
        for _ in sub.take():
            pub.publish(m.Float64MultiArray(data=[0.0, 0.0]))
        for other in others:
            other.take()


def _one(kind: str, seconds: float, domain: int, work: Path, limits: str, policy: str, rt: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    from steer.robot.dds_transport import use_loopback_config

    env["CYCLONEDDS_URI"] = use_loopback_config()
    # The node starts unarmed and obeys only signed commands: the benchmark is its operator.
    from steer.robot.config import load_robot_config
    from steer.robot.keys import init_keys, load_private_key, public_key_hex
    from steer.robot.promotion import file_sha256

    tag = f"{kind}_{time.monotonic_ns()}"
    key = load_private_key(init_keys(work / f"operator_{tag}")[0])
    robot = {"limits": limits, "trusted_operator_keys": [public_key_hex(key.public_key())]}
    sim_json, node_json = work / f"sim_{tag}.json", work / f"node_{tag}.json"
    cmd = [sys.executable, "-m", "steer.robot.processes"]
    if kind == "ours":
        responder = subprocess.Popen(cmd + ["node", json.dumps({"robot": robot, "policy": policy, "domain_id": domain,
                                                                 "stats": str(node_json), "rt_priority": rt})],
                                     env=env)
        from steer.robot.closed_loop import arm_node

        arm_node(load_robot_config(limits), domain, env, key, file_sha256(policy),
                 alive=lambda: responder.poll() is None)
    else:
        responder = subprocess.Popen([sys.executable, __file__, "--echo", str(domain), str(seconds + 30), str(rt)],
                                     env=env)
    sim = subprocess.Popen(cmd + ["sim", json.dumps({
        "robot": robot, "domain_id": domain, "episodes": 1, "duration_s": seconds, "wait_for_node_s": 60.0,
        "results": str(sim_json), "task_kwargs": {"frame_skip": 1, "max_steps": 10**9}, "rt_priority": rt})],
        env=env)
    sim.wait(timeout=seconds + 120)
    responder.terminate()
    responder.wait(timeout=30)
    out = json.loads(sim_json.read_text())
    out.pop("results", None)
    if node_json.exists():
        node = json.loads(node_json.read_text())
        out["node_latency_p50_ms"] = node.get("latency_p50_ms")
        out["node_latency_p99_ms"] = node.get("latency_p99_ms")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="total seconds of our loop (split over repeats)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of ours and the echo peer")
    parser.add_argument("--domain", type=int, default=230, help="DDS domain id of the benchmark")
    parser.add_argument("--rt-priority", type=int, default=20,
                        help="SCHED_FIFO priority of the robot, node and echo processes, as a robot runs its "
                             "control loop (0: normal scheduling)")
    parser.add_argument("--echo", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args()
    if args.echo:
        _echo(int(args.echo[0]), float(args.echo[1]), int(args.echo[2]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="steer-bench-robot-loop-"))
    limits, policy = _limits_yaml(work), _policy(work)
    per_run = args.seconds / args.repeats
    runs = {"ours": [], "echo": []}
    for r in range(args.repeats):
        for kind, seconds in (("ours", per_run), ("echo", per_run / 2)):
            # One domain for all runs is safe: each run's processes have exited before the next starts.
            runs[kind].append(_one(kind, seconds, args.domain, work, limits, policy, args.rt_priority))
            print(f"repeat {r + 1}/{args.repeats} {kind}: " + ", ".join(
                f"{k}={runs[kind][-1][k]:.3f}" for k in ("latency_p50_ms", "latency_p99_ms", "jitter_p99_ms")),
                file=sys.stderr)

    def med(kind, key):
        return float(np.median([run[key] for run in runs[kind]]))

    figures = {
        "latency_p50_ms": med("ours", "latency_p50_ms"),
        "latency_p99_ms": med("ours", "latency_p99_ms"),
        "jitter_p99_ms": med("ours", "jitter_p99_ms"),
        "missed_deadlines": int(sum(run["missed_deadlines"] for run in runs["ours"])),
        "robot_overruns": int(sum(run["overruns"] for run in runs["ours"])),
        "node_latency_p99_ms": med("ours", "node_latency_p99_ms"),
        "echo_latency_p50_ms": med("echo", "latency_p50_ms"),
        "echo_latency_p99_ms": med("echo", "latency_p99_ms"),
        "steps": int(sum(run["steps"] for run in runs["ours"])),
    }
    rows = [("observation→command p50 (ms)", "latency_p50_ms"), ("observation→command p99 (ms)", "latency_p99_ms"),
            ("tick jitter p99 (ms)", "jitter_p99_ms"), ("missed deadlines", "missed_deadlines"),
            ("robot overruns", "overruns"), ("steps", "steps")]
    sched = f"SCHED_FIFO {args.rt_priority}" if args.rt_priority > 0 else "normal scheduling"
    print(f"\nrobot loop, {RATE_HZ:g} Hz across processes over DDS (loopback), {sched}, "
          f"median of {args.repeats} repeats")
    print(f"{'figure':<32}{'policy node (ours)':>20}{'echo (transport floor)':>24}")
    for label, key in rows:
        counts = ("missed_deadlines", "overruns", "steps")
        ours = sum(run[key] for run in runs["ours"]) if key in counts else med("ours", key)
        echo = sum(run[key] for run in runs["echo"]) if key in counts else med("echo", key)
        print(f"{label:<32}{ours:>20.3f}{echo:>24.3f}")
    result = {"figures": figures,
              "details": {"rate_hz": RATE_HZ, "seconds_ours": args.seconds, "repeats": args.repeats,
                          "rt_priority": args.rt_priority,
                          "goal": "latency_p99_ms <= 2, missed_deadlines == 0", "runs": runs},
              "machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
