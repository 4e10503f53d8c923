"""The console's Adapt screen: a learner's status shown, the operator's controls sent, the e-stop as everywhere.

The screen is driven headless with Textual's pilot. The learner and the node are stood in for by the
messages they publish (their classes in ``steer.robot.spec``): once through the link's in-memory transport
(what each key and button sends, exactly) and once over real DDS on loopback, from a second participant
in this process, which also records what the console sends back. The last test runs the real thing: the
simulated robot, the steered node and ``steer adapt`` as processes, operated from the console.
"""

import asyncio
import dataclasses
import json
import functools
import itertools
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robot"))

from robot_helpers import MemoryTransport, operator_key  # noqa: E402
from test_robot_adapt import bc_run  # noqa: E402,F401  (the BC run and its ONNX, as the adapt tests build them)

from steer.robot.spec import AdaptControl, AdaptStatus, OperatorCommand, SafetyState  # noqa: E402
from console_helpers import until  # noqa: E402

SHA = "ab" * 32
SESSION = "s-7f3a9c21"
# (episodes, success, threshold): a session climbing past its gate's threshold
CLIMB = [(35, 0.55, 0.62), (36, 0.70, 0.62), (37, 0.82, 0.62)]


def headless(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def _until(pilot, cond, timeout=10.0):
    return await until(pilot, cond, timeout)


def _status(episodes=37, success=0.82, threshold=0.62, state="running", session=SESSION) -> AdaptStatus:
    return AdaptStatus(session=session, state=state, algo="sac", episodes=episodes, env_steps=episodes * 300,
                       success=success, baseline_success=0.78, threshold=threshold, rho=0.64,
                       gate_choice="explore", shield_interventions=5, late_latents=4, fallbacks=2)


def _safety(**kw) -> SafetyState:
    return SafetyState(**({"mode": "running", "armed": True, "steered": True, "policy_sha256": SHA, "clipped": 3,
                           "latents_used": 1200, "latents_late": 4, "latents_fallback": 2, "latents_rejected": 1}
                          | kw))


def _app(tmp_path, link, **kw):
    from steer.ops.console.app import ConsoleApp, ConsoleSettings
    from steer.robot.processes import robot_config

    return ConsoleApp(ConsoleSettings(runs=tmp_path / "runs", policies=tmp_path / "policies",
                                      robot_config=link.config if link else robot_config(), refresh_s=60, **kw),
                      link=link)


async def _click(pilot, selector: str) -> None:
    """A click as a terminal delivers it: the pointer moves there first (right after a dialog closes, the
    pilot's bare click can land on the widget the pointer was last seen over)."""
    await pilot.hover(selector)
    await pilot.click(selector)


def _signing_console(tmp_path):
    """(key, transport, link, app): a console whose robot link signs with a fresh operator key over memory."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from steer.ops.console.robot import RobotLink
    from steer.robot.processes import robot_config

    key = Ed25519PrivateKey.generate()
    transport = MemoryTransport()
    link = RobotLink(robot_config(), transport=transport, key=key)
    return key, transport, link, _app(tmp_path, link)


def _texts(screen) -> tuple[str, str]:
    return str(screen.query_one("#adapt-status").render()), str(screen.query_one("#adapt-node").render())


# -- plain -----------------------------------------------------------------------------------

def test_the_success_curve_keeps_one_point_per_episode_and_restarts_with_a_new_session():
    from steer.ops.console.adapt import HISTORY, AdaptView

    view = AdaptView()
    view.update(_status(episodes=0, success=0.0))  # waiting: no point yet
    assert view.curve == [] and view.session == SESSION
    for e, s, t in CLIMB:
        view.update(_status(e, s, t))
        view.update(_status(e, s, t))  # the 1 Hz heartbeat restates it
    view.update(_status(37, 0.84, 0.63))  # the same episode, corrected: replaces the point
    assert view.curve == [(35, 0.55, 0.62), (36, 0.70, 0.62), (37, 0.84, 0.63)]
    view.update(_status(36, 0.1, 0.62))  # out of order (an old sample): no point
    assert len(view.curve) == 3 and view.status.episodes == 36
    view.update(_status(1, 0.5, 0.6, session="s-next"))
    assert view.curve == [(1, 0.5, 0.6)]
    for e in range(2, HISTORY + 50):
        view.update(_status(e, 0.5, 0.6, session="s-next"))
    assert len(view.curve) == HISTORY and view.curve[0][0] == 50


def test_the_session_panel_says_where_it_listens_and_compares_success_with_the_threshold():
    from steer.ops.console.adapt import AdaptView, adapt_status_text

    view = AdaptView()
    assert adapt_status_text(view, "/arm2/adapt_status", 7).startswith(
        "[yellow b]No learner heard on /arm2/adapt_status (domain 7)[/]")
    assert "steer adapt --policy runs/<bc> --domain-id 7" in adapt_status_text(view, "/adapt_status", 7)
    view.update(_status(success=0.55))
    view.age_s = 0.2
    text = adapt_status_text(view, "/adapt_status", 7)
    assert "success   0.55  [red]<[/] threshold 0.62" in text and "silent" not in text
    view.update(_status(success=0.82))
    view.age_s = 7.4
    text = adapt_status_text(view, "/adapt_status", 7)
    assert "success   0.82  [green]≥[/] threshold 0.62" in text and "learner silent for 7 s" in text


# -- every key and button, through the link's transport ------------------------------------------

@headless
async def test_adapt_screen_keys_and_buttons_send_the_controls_start_is_signed_and_e_stops(tmp_path, monkeypatch):
    from steer.robot import messages as m
    from steer.robot.keys import CommandVerifier, public_key_hex

    key, transport, link, app = _signing_console(tmp_path)
    said: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        screen = app.screen
        assert type(screen).__name__ == "AdaptScreen"
        screen.notify = lambda message, **kw: said.append(message)  # notices expire; keep them
        await pilot.pause()
        buttons_at = screen.query_one("#adapt-pause").region  # nothing heard yet: the node's panel is short
        # Before a learner speaks, start says where to start one, and nothing is signed.
        await pilot.press("S")
        assert said[-1].startswith("no learner heard on /adapt_status: start one with steer adapt")
        safety = transport.publisher("/safety_state", m.DiagnosticStatus)
        status = transport.publisher("/adapt_status", m.DiagnosticStatus)
        safety.publish(_safety(steered=False).to_message("push"))
        status.publish(_status(episodes=0, success=0.0, state="waiting").to_message("push"))
        await pilot.pause(0.3)
        await pilot.press("S")
        assert said[-1] == "the node does not run in steered mode: start it with steer robot run --steered."
        safety.publish(_safety(armed=False).to_message("push"))
        await pilot.pause(0.3)
        # A learner that stopped talking gets no session.
        monkeypatch.setattr("steer.ops.console.adapt.SILENT_AFTER_S", 0.0)
        await pilot.press("S")
        assert said[-1].startswith("the learner has been silent for ") and said[-1].endswith(
            " s: is steer adapt still running?")
        monkeypatch.setattr("steer.ops.console.adapt.SILENT_AFTER_S", 3600.0)  # a loaded machine is slow
        # Start asks; no sends nothing; yes sends the signed adapt_start of the learner's session.
        await pilot.press("S")
        assert type(app.screen).__name__ == "ConfirmScreen"
        assert "not armed yet" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        assert "/operator_command" not in transport.sent
        await _click(pilot, "#adapt-start")
        assert await _until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("y")
        assert await _until(pilot, lambda: "/operator_command" in transport.sent)
        (sent,) = transport.sent["/operator_command"]
        verifier = CommandVerifier([public_key_hex(key.public_key())], namespace="")
        cmd = verifier.verify(OperatorCommand.from_message(sent), "adapt_start", SHA)
        assert cmd.args == {"session": SESSION} and said[-1] == f"signed adapt_start sent for session {SESSION}"
        # Every control by key, then by button: one unsigned AdaptControl each, for the learner's session.
        await pilot.press("p", "r", "s", "f", "t", "x")
        # Each input is handled before the next: a click sent while the app still worked through the keys
        # was lost once on a loaded machine.
        assert await _until(pilot, lambda: len(transport.sent.get("/adapt_control", [])) == 6)
        # The node's panel now shows its full status; the buttons stayed where the pointer found them.
        assert screen.query_one("#adapt-pause").region == buttons_at
        for i, button in enumerate(("pause", "resume", "success", "failure", "takeover", "stop")):
            await _click(pilot, f"#adapt-{button}")
            assert await _until(pilot, lambda: len(transport.sent["/adapt_control"]) == 7 + i), button
        controls = [AdaptControl.from_message(c) for c in transport.sent["/adapt_control"]]
        order = ["pause", "resume", "mark_success", "mark_failure", "takeover", "stop"]
        assert [c.command for c in controls] == order * 2
        assert {c.session for c in controls} == {SESSION}
        assert all(abs(c.stamp_ns / 1e9 - time.time()) < 60 for c in controls)
        assert len(transport.sent["/operator_command"]) == 1  # none of them is signed
        assert "take over sent: the episode ends as a failure" in said
        # The e-stop: under the start dialog (which stays open), then e, the button and ctrl+e on the screen;
        # each publishes the latched stop.
        await pilot.press("S")
        assert await _until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("e")
        assert type(app.screen).__name__ == "ConfirmScreen" and len(transport.sent["/estop"]) == 1
        await pilot.press("n")
        await pilot.press("e")
        await _click(pilot, "#estop")
        await pilot.press("ctrl+e")
        assert [b.data for b in transport.sent["/estop"]] == [True] * 4
        assert type(app.screen).__name__ == "AdaptScreen" and len(transport.sent["/operator_command"]) == 1


@headless
async def test_without_a_key_start_says_so_and_stop_pause_and_e_stop_still_work(tmp_path):
    from steer.ops.console.robot import NO_KEY_ADAPT, RobotLink
    from steer.robot import messages as m
    from steer.robot.processes import robot_config

    transport = MemoryTransport()
    link = RobotLink(robot_config(), transport=transport, key_error="cannot read the operator key k")
    app = _app(tmp_path, link)
    said: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        transport.publisher("/safety_state", m.DiagnosticStatus).publish(_safety().to_message("push"))
        transport.publisher("/adapt_status", m.DiagnosticStatus).publish(_status(state="waiting").to_message("p"))
        await pilot.press("4")
        app.screen.notify = lambda message, **kw: said.append(message)
        await pilot.press("S")
        await _click(pilot, "#adapt-start")
        assert said[:2] == [NO_KEY_ADAPT + " (cannot read the operator key k)"] * 2
        assert NO_KEY_ADAPT == "no operator key: cannot start an adaptation session (steer keys init)"
        assert type(app.screen).__name__ == "AdaptScreen"  # no dialog was opened
        await pilot.press("p", "x", "e")
        assert [AdaptControl.from_message(c).command for c in transport.sent["/adapt_control"]] == ["pause", "stop"]
        assert [b.data for b in transport.sent["/estop"]] == [True]
        assert "/operator_command" not in transport.sent


@headless
async def test_c_confirms_the_robots_reset_with_a_signed_reset_done_for_the_episode_it_waits_after(tmp_path):
    from steer.ops.console.robot import NO_KEY_RESET, RobotLink
    from steer.robot import messages as m
    from steer.robot.keys import CommandVerifier, public_key_hex
    from steer.robot.processes import robot_config

    key, transport, link, app = _signing_console(tmp_path)
    said: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        screen = app.screen
        screen.notify = lambda message, **kw: said.append(message)
        status = transport.publisher("/adapt_status", m.DiagnosticStatus)
        status.publish(_status().to_message("push"))
        await pilot.pause(0.3)
        await pilot.press("C")  # the robot does not wait: nothing to confirm, nothing asked
        assert said[-1].startswith("the robot is not waiting for a reset") and type(app.screen) is type(screen)
        assert "awaiting reset" not in _texts(screen)[0]
        status.publish(dataclasses.replace(_status(), awaiting_reset="4").to_message("push"))
        assert await _until(pilot, lambda: "awaiting reset after episode 4: C confirms" in _texts(screen)[0])
        # C asks; no sends nothing; yes sends one reset_done, signed, for episode 4.
        await pilot.press("C")
        assert type(app.screen).__name__ == "ConfirmScreen"
        assert "Is the scene reset after episode 4?" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        assert "/operator_command" not in transport.sent
        await pilot.press("C", "y")
        assert await _until(pilot, lambda: "/operator_command" in transport.sent)
        (sent,) = transport.sent["/operator_command"]
        cmd = OperatorCommand.from_message(sent)
        CommandVerifier([public_key_hex(key.public_key())], namespace="").verify(cmd, "reset_done")
        assert cmd.args == {"episode": "4"} and said[-1] == "signed reset_done sent for episode 4"
    # Without a key: one sentence, no dialog, nothing sent.
    transport = MemoryTransport()
    link = RobotLink(robot_config(), transport=transport, key_error="cannot read the operator key k")
    app = _app(tmp_path, link)
    said.clear()
    async with app.run_test(size=(80, 24)) as pilot:
        transport.publisher("/adapt_status", m.DiagnosticStatus).publish(
            dataclasses.replace(_status(), awaiting_reset="4").to_message("push"))
        await pilot.press("4")
        app.screen.notify = lambda message, **kw: said.append(message)
        await pilot.press("C")
        assert said == [NO_KEY_RESET + " (cannot read the operator key k)"]
        assert NO_KEY_RESET == "no operator key: cannot confirm a reset (steer keys init)"
        assert type(app.screen).__name__ == "AdaptScreen" and "/operator_command" not in transport.sent


# -- over real DDS on loopback ---------------------------------------------------------------------

_counter = itertools.count()


@pytest.fixture
def dds_domain(tmp_path_factory):
    """A domain and namespace of this test alone, on a loopback-only Cyclone config."""
    from steer.robot.transport import LOOPBACK_CONFIG

    xml = tmp_path_factory.getbasetemp() / "cyclonedds-adapt-loopback.xml"
    if not xml.exists():
        xml.write_text(LOOPBACK_CONFIG)
    os.environ["CYCLONEDDS_URI"] = f"file://{xml}"
    # Domain 231: the console's robot tests use 220-229, the benchmarks 230; the namespace keeps workers apart.
    return 231, f"adaptui_{os.getpid()}_{next(_counter)}"


@headless
async def test_adapt_screen_shows_a_learners_status_and_the_nodes_counters_over_dds(tmp_path, dds_domain):
    from steer.ops.console.robot import RobotLink
    from steer.robot import messages as m
    from steer.robot.dds_transport import DdsTransport
    from steer.robot.processes import robot_config

    domain, namespace = dds_domain
    config = robot_config(namespace=namespace)
    peer = DdsTransport(domain)  # the learner and the node, as far as the console can tell
    try:
        status_pub = peer.publisher(config.topic(config.adapt_status_topic), m.DiagnosticStatus)
        safety_pub = peer.publisher(config.topic(config.safety_topic), m.DiagnosticStatus)
        control_sub = peer.subscription(config.topic(config.adapt_control_topic), m.DiagnosticStatus)
        estop_sub = peer.subscription(config.topic(config.estop_topic), m.Bool, latched=True)
        link = RobotLink(config, domain, key=operator_key())
        app = _app(tmp_path, link, domain_id=domain)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            screen = app.screen
            # Discovery first: the volatile status reaches only matched readers.
            assert await _until(pilot, lambda: status_pub.matched() and safety_pub.matched()
                                and control_sub.matched(), 20.0), "the console's endpoints never matched"
            for e, s, t in CLIMB:
                status_pub.publish(_status(e, s, t).to_message(config.name))
                assert await _until(pilot, lambda: link.view.adapt.status and link.view.adapt.status.episodes == e)
            safety_pub.publish(_safety(adapt_session=SESSION).to_message(config.name))
            assert await _until(pilot, lambda: link.view.adapt_session == SESSION)
            await pilot.pause(0.3)  # one redraw
            status, node = _texts(screen)
            assert f"session   {SESSION}  RUNNING  sac" in status
            assert "episodes  37   env steps 11,100" in status
            assert "success   0.82  ≥ threshold 0.62" in status and "baseline  0.78" in status
            assert "ρ         0.64   episode: explore" in status
            assert "shield    5 interventions" in status and "latents   4 late · 2 fallbacks" in status
            assert "node    RUNNING armed" in node and f"session {SESSION}" in node and "steered yes" in node
            assert "shield  clip 3 wdog 0 nan 0" in node and "latents used 1200 late 4" in node
            assert "fallback 2 rejected 1" in node
            assert link.view.adapt.curve == CLIMB and screen._plotted == CLIMB
            # The controls and the e-stop reach the other participant.
            await pilot.press("t", "e")
            got: list = []
            estops: list = []

            def arrived():
                got.extend(AdaptControl.from_message(c) for c, _ in control_sub.take())
                estops.extend(b.data for b, _ in estop_sub.take())
                return got and estops

            assert await _until(pilot, arrived, 10.0)
            assert [(c.command, c.session) for c in got] == [("takeover", SESSION)] and estops == [True]
    finally:
        peer.close()


# -- the picture (80x24; also docs/console/adapt.svg) ----------------------------------------------

def test_snapshot_adapt(snap_compare, tmp_path):
    from steer.ops.console.adapt import AdaptView
    from steer.ops.console.robot import RobotLink, RobotView
    from steer.robot.processes import robot_config

    link = RobotLink(robot_config(), domain_id=7, transport=MemoryTransport())
    adapt = AdaptView(age_s=0.4)
    for e in range(1, 38):  # an illustrative session: BC near 0.3 climbing past its threshold
        adapt.update(_status(e, round(min(0.86, 0.3 + 0.016 * e), 3), 0.19) if e < 37 else
                     AdaptStatus(session=SESSION, state="running", algo="sac", episodes=37, env_steps=5_920,
                                 success=0.86, baseline_success=0.24, threshold=0.19, rho=0.64, gate_choice="explore",
                                 shield_interventions=5, late_latents=4, fallbacks=2))
    link.view = RobotView(connected=True, domain_id=7, joint_age_s=0.01, safety_age_s=0.05, mode="running",
                          armed=True, steered=True, adapt_session=SESSION,
                          interventions={"clipped": 3, "watchdog_trips": 2, "non_finite": 0},
                          latents={"used": 1472, "late": 4, "fallback": 2, "rejected": 0}, adapt=adapt)
    link.poll = lambda now_ns=None: link.view
    assert snap_compare(_app(tmp_path, link), terminal_size=(80, 24), press=["4"])


# -- the operator's loop with the real processes ---------------------------------------------------

@pytest.mark.slow
@headless
async def test_the_console_starts_a_real_learners_session_on_a_steered_node_stops_it_and_e_stops(
        tmp_path, dds_domain, bc_run):  # noqa: F811
    """Simulated robot, steered node and ``steer adapt`` as processes over DDS; the console arms the robot,
    starts the learner's session (signed), shows it running, stops it, and its e-stop ends the node's session."""
    import subprocess

    from robot_helpers import RobotProcesses, trusting_keys
    from steer.ops.console.robot import RobotLink
    from steer.robot.processes import robot_config

    domain, namespace = dds_domain
    run_dir, onnx = bc_run
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = RobotProcesses({"domain": domain, "env": env, "python": sys.executable}, tmp_path)
    robot = {"namespace": namespace, "trusted_operator_keys": trusting_keys(), "time_scale": 2.0}
    learner = None
    try:
        procs.start("node", policy=str(onnx), robot=dict(robot), steered=True, status_every_s=0)
        procs.start("sim", robot=dict(robot), episodes=0, seed=3, wait_for_node_s=60.0,
                    task_kwargs={"max_steps": 20}, status_every_s=0)
        learner = subprocess.Popen(
            [sys.executable, "-m", "steer.ops.cli", "adapt", "--policy", str(run_dir), "--domain-id", str(domain),
             "--namespace", namespace, "--name", "adapt", "--runs", str(tmp_path / "runs"), "--session", "s1",
             "--no-progress", "--dsrl.env-steps", "100000", "--dsrl.warmup-env-steps", "40", "--dsrl.utd", "1",
             "--dsrl.batch-size", "32", "--dsrl.hidden-dim", "32", "--dsrl.num-layers", "2",
             "--dsrl.buffer-size", "5000", "--dsrl.conservative.min-baseline-episodes", "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.procs.append(learner)
        config = robot_config(namespace=namespace)
        link = RobotLink(config, domain, key=operator_key())
        app = _app(tmp_path, link, domain_id=domain)
        view = link.view
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            assert await _until(pilot, lambda: view.policy_sha256 and view.mode != "unknown", 60.0), \
                "the node never reported its policy"
            await pilot.press("A", "y")
            assert await _until(pilot, lambda: view.armed, 20.0), "the node refused the console's arm"
            await pilot.press("4")
            screen = app.screen
            # steer adapt imports torch and builds its model: give it time to speak.
            assert await _until(pilot, lambda: view.adapt.status is not None, 90.0), "no status from steer adapt"
            assert view.adapt.session == "s1" and view.adapt.status.state == "waiting" and view.adapt_session == ""
            await pilot.press("S")
            assert await _until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
            await pilot.press("y")
            assert await _until(pilot, lambda: view.adapt_session == "s1", 20.0), view.last_refusal
            assert await _until(pilot, lambda: view.adapt.status.state == "running"
                                and view.adapt.status.episodes >= 3, 90.0), view.adapt.status
            # Statuses keep arriving while the learner runs: the panel shows the latest one on its next redraw.
            def panel_matches_view():
                return f"episodes  {view.adapt.status.episodes} " in _texts(screen)[0]
            assert await _until(pilot, panel_matches_view, 10.0), (_texts(screen)[0], view.adapt.status)
            status, node = _texts(screen)
            shown = view.adapt.status
            assert "session   s1  RUNNING  sac" in status and shown.episodes >= 3
            assert view.latents["used"] + view.latents["fallback"] > 0 and "session s1" in node
            assert view.adapt.curve and view.adapt.curve[-1][0] <= shown.episodes
            # Stop: the learner ends its run cleanly and says so before it exits.
            await pilot.press("x")
            assert await _until(pilot, lambda: learner.poll() is not None, 60.0), "steer adapt did not stop"
            out, err = learner.communicate()
            assert learner.returncode == 0, err[-2000:]
            summary = json.loads((tmp_path / "runs" / "adapt" / "summary.json").read_text())
            assert summary["episodes"] >= shown.episodes >= 3
            # The e-stop from this screen stops the node and ends its session.
            await pilot.press("e")
            assert await _until(pilot, lambda: view.mode == "estopped" and view.adapt_session == "", 10.0)
            # The panel redraws on its next refresh after the link's view changed.
            assert await _until(pilot, lambda: "none armed" in _texts(screen)[1], 5.0), _texts(screen)[1]
    finally:
        procs.stop_all()


@pytest.mark.slow
@headless
async def test_the_consoles_reset_confirmation_starts_a_waiting_robots_next_episode(tmp_path, dds_domain):
    """The simulated robot in operator reset mode as a process over DDS; a peer in this process stands in for the
    learner (it passes the robot's awaiting_reset on in an AdaptStatus); C, y on the console lets the robot go on."""
    from robot_helpers import RobotProcesses, trusting_keys
    from steer.ops.console.robot import RobotLink
    from steer.robot import messages as m
    from steer.robot.dds_transport import DdsTransport
    from steer.robot.processes import robot_config
    from steer.robot.spec import EpisodeStatus

    domain, namespace = dds_domain
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = RobotProcesses({"domain": domain, "env": env, "python": sys.executable}, tmp_path)
    robot = {"namespace": namespace, "trusted_operator_keys": trusting_keys(), "time_scale": 2.0,
             "reset_mode": "operator"}
    config = robot_config(namespace=namespace)
    peer = DdsTransport(domain)
    try:
        episodes = peer.subscription(config.topic(config.episode_topic), m.DiagnosticStatus)
        status_pub = peer.publisher(config.topic(config.adapt_status_topic), m.DiagnosticStatus)
        # No node: the robot holds through its 20-step episodes (command timeout) and waits after each.
        procs.start("sim", robot=dict(robot), episodes=0, seed=3, task_kwargs={"max_steps": 20}, status_every_s=0,
                    results=str(tmp_path / "sim.json"))
        link = RobotLink(config, domain, key=operator_key())
        app = _app(tmp_path, link, domain_id=domain)
        seen: list[tuple[float, EpisodeStatus]] = []

        def relay():  # the learner's part: the robot's wait goes into its status
            for msg_, _ in episodes.take():
                e = EpisodeStatus.from_message(msg_)
                seen.append((time.monotonic(), e))
                if e.event in ("awaiting_reset", "start"):
                    status_pub.publish(dataclasses.replace(_status(session="s1"), awaiting_reset=e.episode
                                                           if e.event == "awaiting_reset" else "").to_message("r"))
            return seen

        def waits(episode):
            return [e for _, e in seen if e.event == "awaiting_reset" and e.episode == episode]

        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            screen = app.screen
            assert await _until(pilot, lambda: relay() and waits("0") and link._operator_pub.matched(), 60.0), \
                "the robot never waited after its first episode (or its command reader never matched)"
            assert await _until(pilot, lambda: relay() is not None and "awaiting reset after episode 0" in
                                _texts(screen)[0], 10.0), _texts(screen)[0]
            await pilot.press("C")
            assert await _until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
            await pilot.press("y")
            pressed = time.monotonic()
            assert await _until(pilot, lambda: relay() is not None and any(
                e.event == "start" and e.episode == "1" for _, e in seen), 10.0), "the robot did not take the reset"
            started = next(t for t, e in seen if e.event == "start" and e.episode == "1")
            assert started - pressed < 2.0
            # The robot waits again after episode 1, having refused nothing.
            assert await _until(pilot, lambda: relay() is not None and waits("1"), 10.0)
            assert waits("1")[-1].operator_refusals == 0
            assert await _until(pilot, lambda: relay() is not None and "after episode 1" in _texts(screen)[0], 10.0)
    finally:
        procs.stop_all()
        peer.close()
    summary = json.loads((tmp_path / "sim.json").read_text())
    assert summary["resets_confirmed"] == 1 and summary["operator_refusals"] == 0 and summary["episodes"] == 2
