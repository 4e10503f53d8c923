"""The Robots screen against a real simulated robot and policy node over DDS (loopback only).

The robot and the node are child processes (``python -m steer.robot.processes``) in a DDS
domain and namespace of this test alone; the console runs headless in the test process,
and a separate DDS participant here records every command the node sends and every operator
command the console signs (checked with the robot's own :class:`~steer.robot.keys.CommandVerifier`).
The node trusts the test operator's key; the fixture arms it, the console's release and arm resume it
after each e-stop.
"""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robot"))

from robot_helpers import arm_over_dds, make_policy, operator_key, trusting_keys  # noqa: E402
from console_helpers import until  # noqa: E402

pytestmark = pytest.mark.slow
ESTOP_BUDGET_S = 0.050
# Domains 220-229: the robot tests use 10-99, closed-loop evaluation 120-219, benchmarks 230.
_DOMAINS = {"gw0": (220, 4), "gw1": (224, 4)}
_counter = itertools.count()


@pytest.fixture
def robot_dds(tmp_path_factory):
    from steer.robot.transport import LOOPBACK_CONFIG

    base, span = _DOMAINS.get(os.environ.get("PYTEST_XDIST_WORKER", ""), (228, 2))
    domain = base + next(_counter) % span
    xml = tmp_path_factory.getbasetemp() / "cyclonedds-console-loopback.xml"
    if not xml.exists():
        xml.write_text(LOOPBACK_CONFIG)
    os.environ["CYCLONEDDS_URI"] = f"file://{xml}"
    namespace = f"console_{os.getpid()}_{domain}"
    return {"domain": domain, "namespace": namespace,
            "env": dict(os.environ, CYCLONEDDS_URI=f"file://{xml}", PYTHONUNBUFFERED="1")}


@pytest.fixture
def sim_and_node(robot_dds, tmp_path, request):
    """A simulated PlanarPush robot driven by a policy that moves the pusher along +y at 4 cm/s
    (or at the speed given by indirect parametrization: a slower pusher takes longer to reach its limit)."""
    policy = make_policy(tmp_path / "drive.onnx", bias=[0.0, getattr(request, "param", 0.04)])
    common = {"domain_id": robot_dds["domain"], "rt_priority": 10, "status_every_s": 2.0,
              "robot": {"namespace": robot_dds["namespace"], "trusted_operator_keys": trusting_keys()}}
    procs: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}
    state = dict(robot_dds, policy=policy)

    def start(attempt: int) -> None:
        procs.clear()
        for which, kwargs in (("node", {"policy": str(policy)}),
                              ("sim", {"episodes": 1, "seed": 3, "wait_for_node_s": 60.0,
                                       "task_kwargs": {"max_steps": 100_000}})):
            logs[which] = tmp_path / f"{which}-{attempt}.log"
            procs.append(subprocess.Popen([sys.executable, "-m", "steer.robot.processes", which,
                                           json.dumps(common | kwargs)], env=robot_dds["env"],
                                          stdout=open(logs[which], "w"), stderr=subprocess.STDOUT))
            if which == "node":  # the node starts unarmed: the operator arms it before the robot runs
                from steer.robot.dds_transport import DdsTransport

                transport = DdsTransport(robot_dds["domain"])
                try:
                    arm_over_dds(transport, policy, namespace=robot_dds["namespace"])
                finally:
                    transport.close()
        state.update(node=procs[0], sim=procs[1])

    def stop() -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    def diagnosis() -> str:
        """Exit codes and log tails of both processes, for a failure message."""
        out = []
        for which, p in zip(("node", "sim"), procs):
            tail = logs[which].read_text()[-1500:] if logs[which].exists() else ""
            out.append(f"{which}: returncode {p.poll()}\n{tail}")
        return "\n".join(out)

    def restart() -> None:
        stop()
        start(1)

    start(0)
    state.update(diagnosis=diagnosis, restart=restart, logs=logs)
    yield state
    stop()


class CommandRecorder:
    """Records (receive time, command) of every command on its own DDS participant and thread,
    and, given ``config``, every operator command the console publishes (``operator_log``)."""

    def __init__(self, domain: int, topic: str, config=None):
        from steer.robot import messages as m
        from steer.robot.dds_transport import DdsTransport

        self.transport = DdsTransport(domain)
        self.sub = self.transport.subscription(topic, m.Float64MultiArray)
        self.log: list[tuple[int, list[float]]] = []
        self.sent: list[int] = []
        """When the node wrote each command (ns since the epoch): a slowed recorder does not change them."""
        self.operator_log: list = []
        self.operator_sub = None
        if config is not None:
            self.operator_sub = self.transport.subscription(config.topic(config.operator_command_topic),
                                                            m.DiagnosticStatus)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.transport.wait(0.002)
            recv = time.monotonic_ns()
            for msg, sent in self.sub.take_timed():
                self.log.append((recv, list(msg.data)))
                self.sent.append(sent)
            if self.operator_sub is not None:
                self.operator_log += [msg for msg, _ in self.operator_sub.take()]

    def moving_since(self, t_ns: int) -> int:
        """Commands that move the robot received after ``t_ns``."""
        return sum(1 for t, c in self.log if t > t_ns and any(c))

    def stop_time_s(self, t_press: int) -> float | None:
        """Seconds from ``t_press`` to the first command after which nothing moved (None: still moving)."""
        after = [(t, c) for t, c in self.log if t > t_press]
        last_moving = max((i for i, (_, c) in enumerate(after) if any(c)), default=-1)
        if last_moving >= len(after) - 1:
            return None
        return (after[last_moving + 1][0] - t_press) / 1e9

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _verified(messages, command: str, policy_sha256: str, namespace: str):
    """The operator commands in ``messages`` as the robot checks them (signature, robot, policy, freshness)."""
    from steer.robot.keys import CommandVerifier, public_key_hex
    from steer.robot.spec import OperatorCommand

    verifier = CommandVerifier([public_key_hex(operator_key().public_key())], namespace=namespace)
    return [verifier.verify(OperatorCommand.from_message(m), command, policy_sha256) for m in messages]


async def _resume(pilot, app, recorder, robot) -> None:
    """After an e-stop: the console's signed release and arm (each asks), checked on the wire as the
    robot checks them; then the robot moves again."""
    from steer.robot.promotion import file_sha256

    if type(app.screen).__name__ != "RobotsScreen":
        await pilot.press("2")
    n0 = len(recorder.operator_log)
    await pilot.press("R", "y")
    await pilot.press("A", "y")
    assert await _until(pilot, lambda: len(recorder.operator_log) >= n0 + 2, 15.0), "no signed release and arm"
    release, arm = recorder.operator_log[n0:n0 + 2]
    sha = file_sha256(robot["policy"])
    assert _verified([release], "release", sha, robot["namespace"])[0].command == "release"
    assert _verified([arm], "arm", sha, robot["namespace"])[0].command == "arm"
    t0 = time.monotonic_ns()
    assert await _until(pilot, lambda: app.link.view.mode == "running" and recorder.moving_since(t0) >= 3, 20.0), \
        "the robot did not move again after release and arm"


async def _until(pilot, cond, timeout):
    return await until(pilot, cond, timeout, poll=0.02)  # fine-grained: these tests time the e-stop


def test_robots_screen_shows_the_robot_and_the_estop_key_stops_it_within_50_ms(sim_and_node, tmp_path):
    from textual.widgets import DataTable, Static

    from steer.ops.console.app import ConsoleApp, ConsoleSettings
    from steer.ops.console.robot import command_rate
    from steer.robot.processes import robot_config

    config = robot_config(namespace=sim_and_node["namespace"])
    recorder = CommandRecorder(sim_and_node["domain"], config.command_topic, config)
    settings = ConsoleSettings(runs=tmp_path / "runs", robot_config=config, domain_id=sim_and_node["domain"],
                               operator_key=operator_key())

    def moving():
        return sum(1 for _, c in recorder.log if any(c)) >= 5

    async def drive():
        app = ConsoleApp(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            screen = app.screen
            if not await _until(pilot, moving, 45.0):
                # Two processes and their discovery on a loaded 2-core runner: once, in about 1 of 10
                # full-suite runs, nothing moved for 90 s. Start both again once, and say so.
                print("no movement in 45 s; restarting robot and node once:\n" + sim_and_node["diagnosis"](),
                      file=sys.stderr)
                sim_and_node["restart"]()
                t_restart = time.monotonic_ns()
                moved_since = lambda: sum(1 for t, c in recorder.log if t > t_restart and any(c)) >= 5  # noqa: E731
                assert await _until(pilot, moved_since, 60.0), ("the policy node never moved the robot; "
                                                           f"{len(recorder.log)} commands recorded\n"
                                                           + sim_and_node["diagnosis"]())
            assert await _until(pilot, lambda: app.link.view.mode == "running" and app.link.view.latency_ms, 10.0)
            await pilot.pause(1.5)  # the rate is averaged over a window: let it fill
            view = app.link.view
            true_rate = command_rate(list(recorder.sent), time.time_ns())
            joints = screen.query_one("#joints", DataTable)
            assert joints.row_count == 4 and set(view.joints) == {"pusher_x", "pusher_y", "puck_x", "puck_y"}
            assert view.command == pytest.approx([0.0, 0.04])
            # The shown rate is the rate the node really publishes (recorded on our own
            # participant); that rate is the 20 Hz control rate, give or take a robot
            # catching up after a stall on a busy machine (it then steps up to 1/0.6 faster).
            assert 10.0 < true_rate < 35.0
            assert view.commands_per_s == pytest.approx(true_rate, rel=0.25)
            assert 0.0 <= view.latency_ms < 50.0 and not view.watchdog_tripped and not view.silent
            assert "RUNNING" in str(screen.query_one("#safety", Static).render())

            # The e-stop key: the node's first stop command must reach the robot within 50 ms.
            t_press = time.monotonic_ns()
            await pilot.press("e")
            sent = app.link.estop_sent_ns
            await pilot.pause(0.6)
            after = [(t, c) for t, c in recorder.log if t > t_press]
            assert after, "no command after the e-stop"
            last_moving = max((i for i, (_, c) in enumerate(after) if any(c)), default=-1)
            assert last_moving < len(after) - 1, "the robot was still commanded to move"
            stopped = (after[last_moving + 1][0] - t_press) / 1e9
            assert await _until(pilot, lambda: app.link.view.mode == "estopped", 5.0)
            assert app.link.view.estop_latched
            assert "ESTOPPED" in str(screen.query_one("#safety", Static).render())

            # Release asks first; "n" sends nothing and leaves the robot stopped.
            n_signed = len(recorder.operator_log)
            await pilot.press("R", "n")
            await pilot.pause(0.5)
            t_no = time.monotonic_ns()
            await pilot.pause(0.5)
            assert all(not any(c) for t, c in recorder.log if t > t_no)
            assert len(recorder.operator_log) == n_signed
            # The button does the same as the key, and the e-stop stays latched.
            await pilot.click("#estop")
            await _resume(pilot, app, recorder, sim_and_node)

            # The robot goes silent: the node's watchdog trips and the console shows both.
            sim_and_node["sim"].kill()
            assert await _until(pilot, lambda: app.link.view.watchdog_tripped and app.link.view.silent, 5.0)
            await pilot.pause(0.3)
            text = str(screen.query_one("#safety", Static).render())
            assert "TRIPPED" in text and "silent" in text
            assert app.link.view.interventions["watchdog_trips"] > 0
            return stopped, (sent - t_press) / 1e9

    try:
        stopped, key_to_publish = asyncio.run(drive())
    finally:
        recorder.close()
    print(f"e-stop: key -> publish {key_to_publish * 1e3:.1f} ms, key -> robot stopped {stopped * 1e3:.1f} ms")
    assert 0 < stopped < ESTOP_BUDGET_S


@pytest.mark.parametrize("sim_and_node", [0.01], indirect=True)  # 1 cm/s: ~30 s from the limits
def test_estop_keys_stop_the_robot_within_50_ms_over_help_dialogs_and_text_fields(sim_and_node, tmp_path):
    """``e`` over the help screen, under the confirm and pick-run dialogs and on the Adapt screen; in the
    command and connect dialogs (a text field has focus) ``e`` types an e and ``ctrl+e`` stops. One robot,
    one console."""
    from textual.widgets import Input

    from steer.ops.console.app import ConsoleApp, ConsoleSettings
    from steer.robot.processes import robot_config

    config = robot_config(namespace=sim_and_node["namespace"])
    recorder = CommandRecorder(sim_and_node["domain"], config.command_topic, config)
    runs = tmp_path / "runs"
    (runs / "dsrl-a" / "checkpoints").mkdir(parents=True)  # a run to pick on the Policies screen
    (runs / "dsrl-a" / "checkpoints" / "last.safetensors").write_bytes(b"\0" * 16)
    (runs / "dsrl-a" / "checkpoints" / "last.json").write_text("{}")
    (runs / "dsrl-a" / "config.json").write_text(json.dumps({"kind": "dsrl", "config": {}}))
    (runs / "dsrl-a" / "status.json").write_text(json.dumps({"status": "finished", "kind": "dsrl"}))
    settings = ConsoleSettings(runs=runs, policies=tmp_path / "policies", robot_config=config,
                               domain_id=sim_and_node["domain"], operator_key=operator_key())
    # (case, screen key, keys that open the dialog, dialog class, the e-stop key)
    cases = [("help", "1", ["question_mark"], "HelpScreen", "e"),
             ("confirm", "2", ["R"], "ConfirmScreen", "e"),
             ("pick run", "3", ["p"], "PickRunScreen", "e"),
             ("command line", "1", ["s"], "CommandScreen", "ctrl+e"),
             ("connect", "2", ["o"], "ConnectScreen", "ctrl+e"),
             ("adapt screen", "4", [], "AdaptScreen", "e")]
    stops: dict[str, float | None] = {}

    async def drive():
        app = ConsoleApp(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            assert await _until(pilot, lambda: recorder.moving_since(0) >= 5, 60.0), (
                "the policy node never moved the robot\n" + sim_and_node["diagnosis"]())
            for case, screen_key, open_keys, dialog, key in cases:
                await pilot.press(screen_key, *open_keys)
                assert type(app.screen).__name__ == dialog, case
                if key == "ctrl+e":
                    # A text field has focus: e is a letter there, and nothing is sent.
                    sent_before = app.link.estop_sent_ns
                    await pilot.press("e")
                    assert isinstance(app.focused, Input) and app.focused.value.endswith("e"), case
                    assert app.link.estop_sent_ns == sent_before, case
                t0 = time.monotonic_ns()
                assert await _until(pilot, lambda: recorder.moving_since(t0) >= 2, 15.0), f"{case}: not moving"
                t_press = time.monotonic_ns()
                await pilot.press(key)
                await pilot.pause(0.4)
                stops[case] = recorder.stop_time_s(t_press)
                assert type(app.screen).__name__ == dialog, f"{case}: the e-stop closed the dialog"
                assert await _until(pilot, lambda: app.link.view.mode == "estopped", 15.0), case
                await pilot.press("escape")
                await _resume(pilot, app, recorder, sim_and_node)

    try:
        asyncio.run(drive())
    finally:
        recorder.close()
    print("key -> robot stopped: " + ", ".join(f"{c} {t * 1e3:.1f} ms" for c, t in stops.items() if t is not None))
    assert all(t is not None and 0 < t < ESTOP_BUDGET_S for t in stops.values()), stops
    # Both processes told their operator how they were doing while they ran (every 2 s here).
    import re

    node_lines = re.findall(r"policy node: mode (\w+) · episode (\S+) · latency p50 ([\d.]+) ms · watchdog trips "
                            r"(\d+) · commands (\d+)", sim_and_node["logs"]["node"].read_text())
    sim_lines = re.findall(r"sim robot: episodes (\d+) · success (\S+) · latency p50 ([\d.]+) ms",
                           sim_and_node["logs"]["sim"].read_text())
    assert len(node_lines) >= 3 and len(sim_lines) >= 3, sim_and_node["diagnosis"]()
    assert {m[0] for m in node_lines} & {"running", "estopped"} and int(node_lines[-1][4]) > 100
    assert all(float(m[2]) < 50.0 for m in sim_lines)
