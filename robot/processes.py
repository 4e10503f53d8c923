"""The two robot-side processes: the simulated robot and the policy node.

``run_sim`` and ``run_node`` are what ``steer robot sim`` and ``steer robot run``
call; ``python -m steer.robot.processes {sim,node} '<json kwargs>'`` starts the same
functions without the CLI (used by :mod:`steer.robot.closed_loop`). SIGINT and
SIGTERM end either process cleanly: the node sends a final hold command and writes
its last bag and its stats. While they run, each prints a one-line status to stderr every
``status_every_s`` seconds (stdout keeps the final JSON summary alone).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from steer.robot.config import RobotConfig, load_robot_config
from steer.robot.errors import RobotError

_stop = False


def _install_stop_handlers() -> None:
    def handler(signum, frame):  # noqa: ARG001
        global _stop
        _stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _should_stop() -> bool:
    return _stop


STATUS_EVERY_S = 5.0
"""Seconds between two status lines of ``steer robot sim`` / ``steer robot run`` (0: none)."""


def _median_ms(latencies_ns: list[int], last: int = 200) -> str:
    recent = sorted(latencies_ns[-last:])
    return f"{recent[len(recent) // 2] / 1e6:.1f} ms" if recent else "-"


def sim_status_line(stats) -> str:
    """One line about a running simulated robot (:class:`steer.robot.sim_robot.SimStats`)."""
    n = len(stats.episodes)
    success = f"{sum(e.success for e in stats.episodes)}/{n}" if n else "-"
    waits = f" · awaiting reset after episode {stats.awaiting_reset}" if stats.awaiting_reset else ""
    refused = f" · refused {stats.operator_refusals}" if stats.operator_refusals else ""
    return (f"sim robot: episodes {n} · success {success} · latency p50 {_median_ms(stats.latencies_ns)} "
            f"· late steps {stats.late_steps} · held steps {stats.held_steps}{waits}{refused}")


def node_status_line(node) -> str:
    """One line about a running policy node (:class:`steer.robot.policy_node.PolicyNode`)."""
    state = node.safety_state()
    episode = state.episode or "-"
    refused = f" · refused {state.operator_refusals}" if state.operator_refusals else ""
    if state.steered:
        refused += (f" · latents {state.latents_used} used, {state.latents_fallback} fallback, "
                    f"{state.latents_late} late, {state.latents_rejected} refused")
    return (f"policy node: mode {state.mode} · episode {episode} · latency p50 {_median_ms(node.stats.latencies_ns)} "
            f"· watchdog trips {state.watchdog_trips} · commands {node.stats.commands} "
            f"({node.stats.safe_commands} safe){refused}")


class StatusPrinter:
    """The loops' stop check, which also prints ``line()`` to stderr every ``every_s`` seconds.

    The loops call their stop check on every pass, so the line is built on the loop's own thread
    (no locks around the stats) and costs one clock read per pass in between.
    """

    def __init__(self, line, every_s: float = STATUS_EVERY_S, out=None):
        self.line, self.every_s, self.out = line, float(every_s), out
        self._next = time.monotonic() + self.every_s

    def __call__(self) -> bool:
        if self.every_s > 0 and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            print(self.line(), file=self.out or sys.stderr, flush=True)
        return _should_stop()


def _quiet_garbage_collector() -> None:
    # Everything built during start-up (models, DDS entities, modules) lives for the whole run:
    # moving it out of the collector's view keeps full collections from pausing a tick.
    import gc

    gc.collect()
    gc.freeze()


def set_realtime_priority(priority: int) -> bool:
    """Run this process (and the DDS threads it creates afterwards) under SCHED_FIFO at ``priority``.

    Control loops on robots run this way so that other work cannot delay a tick; 0 keeps the
    normal scheduler. Returns False (with a warning) where the system does not allow it.
    """
    if priority <= 0:
        return False
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (AttributeError, OSError, PermissionError) as err:
        print(f"real-time priority {priority} not available ({err}); running with normal scheduling.",
              file=sys.stderr)
        return False


def robot_config(limits: str | None = None, namespace: str | None = None, rate_hz: float | None = None,
                 time_scale: float | None = None, **topics: str | None) -> RobotConfig:
    """The robot config from a limits YAML (default: the packaged PlanarPush one) plus overrides."""
    config = load_robot_config(limits)
    return config.replace(namespace=namespace, control_rate_hz=rate_hz, time_scale=time_scale, **topics)


def _transport(transport: str, domain_id: int, loopback: bool):
    if transport == "rclpy":
        from steer.robot.rclpy_transport import RclpyTransport

        return RclpyTransport(domain_id=domain_id)
    from steer.robot.dds_transport import DdsTransport, use_loopback_config

    if loopback:
        use_loopback_config()
    return DdsTransport(domain_id)


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(p)  # a reader never sees half a file


def run_sim(config: RobotConfig, domain_id: int = 0, task: str = "steer/PlanarPush-v0", episodes: int = 0,
            seed: int = 0, duration_s: float | None = None, wait_for_node_s: float = 0.0,
            results: str | None = None, loopback: bool = True, transport: str = "dds",
            task_kwargs: dict[str, Any] | None = None, require_node: bool = False,
            progress_file: str | None = None, rt_priority: int = 0,
            status_every_s: float = STATUS_EVERY_S) -> dict[str, Any]:
    """Run the simulated robot; returns (and writes to ``results``) its summary.

    With ``require_node`` a node that does not appear within ``wait_for_node_s`` is an error
    (closed-loop evaluation); otherwise the robot starts anyway and holds until commands come.
    """
    from steer.robot.sim_robot import SimRobot

    _install_stop_handlers()
    set_realtime_priority(rt_priority)  # before the transport: its threads inherit the policy
    t = _transport(transport, domain_id, loopback)
    robot = SimRobot(config, t, task=task, seed=seed, task_kwargs=task_kwargs, progress_file=progress_file)
    _quiet_garbage_collector()
    if wait_for_node_s > 0 and not robot.wait_for_node(wait_for_node_s):
        if require_node:
            raise RobotError(f"no policy node appeared within {wait_for_node_s:g} s on DDS domain {domain_id}.")
        print(f"sim robot: no policy node appeared within {wait_for_node_s:g} s; starting anyway.", file=sys.stderr)
    stats = robot.run(episodes, duration_s, StatusPrinter(lambda: sim_status_line(robot.stats), status_every_s))
    summary = stats.summary(config.control_period_s)
    _write_json(results, summary)
    t.close()
    return summary


def run_node(config: RobotConfig, policy: str, domain_id: int = 0, duration_s: float | None = None,
             bag_dir: str | None = None, stats: str | None = None,
             trigger: str = "observation", loopback: bool = True, transport: str = "dds",
             ready_file: str | None = None, rt_priority: int = 0,
             status_every_s: float = STATUS_EVERY_S, steered: bool = False) -> dict[str, Any]:
    """Run the policy node on an ONNX policy; returns (and writes to ``stats``) its timing summary.

    ``steered``: the policy's noise comes from the learner's latent topic inside a signed adaptation session
    (see :class:`steer.robot.policy_node.PolicyNode`).

    The node starts unarmed: it commands the robot only after a signed ``arm`` (see
    :func:`steer.robot.closed_loop.send_operator_command`)."""
    from steer.robot.bag import EpisodeBagWriter
    from steer.robot.onnx_policy import OnnxPolicy
    from steer.robot.policy_node import PolicyNode

    _install_stop_handlers()
    onnx_policy = OnnxPolicy(policy, robot=config)
    set_realtime_priority(rt_priority)  # before the transport: its threads inherit the policy
    t = _transport(transport, domain_id, loopback)
    bag = EpisodeBagWriter(bag_dir) if bag_dir else None
    node = PolicyNode(config, onnx_policy, t, bag=bag, trigger=trigger, steered=steered)
    _quiet_garbage_collector()
    if ready_file:
        Path(ready_file).write_text(str(time.time()))
    result = node.run(duration_s, StatusPrinter(lambda: node_status_line(node), status_every_s))
    state = node.safety_state()
    summary = result.summary() | {"bags": [str(p) for p in (bag.written if bag else [])],
                                  "mode": node.shield.mode.value, "watchdog_trips": node.shield.counters.watchdog,
                                  "rejected_messages": state.rejected_messages,
                                  "bag_dropped": state.bag_dropped, "bag_error": state.bag_error,
                                  "latents_used": state.latents_used, "latents_late": state.latents_late,
                                  "latents_fallback": state.latents_fallback,
                                  "latents_rejected": state.latents_rejected}
    _write_json(stats, summary)
    t.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m steer.robot.processes {sim,node} '<json kwargs>'`` (kwargs of run_sim/run_node
    plus the robot_config ones under ``"robot"``)."""
    argv = sys.argv[1:] if argv is None else argv
    which, kwargs = argv[0], json.loads(argv[1])
    config = robot_config(**kwargs.pop("robot", {}))
    (run_sim if which == "sim" else run_node)(config, **kwargs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
