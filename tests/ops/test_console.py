"""The console's run scanning, tailing, jobs, and its Runs and Policies screens driven headless.

Run directories are real ones written by the tests; the live run is a real child process
that writes its run directory the way ``steer.ops.run.Run`` does.
"""

import asyncio
import functools
import json
import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robot"))

from robot_helpers import MemoryTransport, make_policy  # noqa: E402

from steer.ops.console.jobs import RunJobs, resume_argv  # noqa: E402
from steer.ops.run import MetricTail, checkpoints, config_lines, read_run, run_status, scan_runs, sps_of  # noqa: E402
from steer.robot.promotion import file_sha256 as sha256_file  # noqa: E402
from steer.robot.spec import OperatorCommand  # noqa: E402
from console_helpers import until  # noqa: E402

HOST = socket.gethostname()


def headless(fn):
    """Run an async test (the app's pilot) to completion in its own event loop."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def make_run(root: Path, name: str, kind: str = "dsrl", status: str = "finished", pid: int = 1, n: int = 20,
             key: str = "charts/success_rate", t0: float = 1_000_000.0, host: str = HOST, ckpt: bool = True) -> Path:
    """A run directory as ``Run`` writes it: config, status, metrics, one checkpoint pair."""
    d = root / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"kind": kind, "config": {"lr": 0.0003, "sac": {"batch": 256}},
                                               "command": ["/usr/bin/steer", kind, "--name", name], "host": host,
                                               "started": t0}))
    (d / "status.json").write_text(json.dumps({"status": status, "kind": kind, "pid": pid, "time": t0 + n}))
    with open(d / "metrics.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"step": 1000 * (i + 1), "time": t0 + i, key: round(0.1 + 0.8 * i / n, 4),
                                "charts/SPS": 500.0, "losses/q": 1.0 / (i + 1)}) + "\n")
    if ckpt:
        (d / "checkpoints" / "last.safetensors").write_bytes(b"\0" * 2_000_000)
        (d / "checkpoints" / "last.json").write_text("{}")
    return d


# -- plain classes ---------------------------------------------------------------------

def test_status_from_status_file_pid_and_metrics_age(tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: never a live process
    make_run(tmp_path, "live", status="running", pid=os.getpid(), t0=time.time() - 60)
    make_run(tmp_path, "hung", status="running", pid=os.getpid(), t0=time.time() - 700)
    make_run(tmp_path, "crashed", status="running", pid=dead)
    make_run(tmp_path, "done", status="finished", key="charts/route_completion", kind="ppo")
    make_run(tmp_path, "broke", status="failed")
    make_run(tmp_path, "remote-quiet", status="running", pid=dead, host="elsewhere", t0=0.0)
    make_run(tmp_path, "remote-busy", status="running", pid=dead, host="elsewhere", t0=time.time() - 30)
    (tmp_path / "not-a-run").mkdir()
    runs = {r.name: r for r in scan_runs(tmp_path)}
    assert set(runs) == {"live", "hung", "crashed", "done", "broke", "remote-quiet", "remote-busy"}
    assert {n: r.status for n, r in runs.items()} == {
        "live": "running", "hung": "stale", "crashed": "stale", "done": "finished", "broke": "failed",
        "remote-quiet": "stale", "remote-busy": "running"}
    done = runs["done"]
    assert done.kind_label == "PPO" and done.step == 20_000 and done.score_label == "route"
    assert done.score == pytest.approx(0.1 + 0.8 * 19 / 20) and done.sps == 500.0
    assert runs["live"].kind_label == "DSRL" and runs["live"].score_label == "success"
    # Newest activity first.
    assert list(runs)[:2] == ["remote-busy", "live"]


def test_a_demo_folder_lists_its_bc_and_dsrl_runs_not_itself(tmp_path):
    demo = tmp_path / "demo-1"
    make_run(demo, "bc", kind="bc", key="eval/success_rate", t0=1_000_000.0)
    make_run(demo, "dsrl", t0=1_000_100.0)
    (demo / "data").mkdir()  # demonstrations: no run
    (demo / "config.json").write_text("{}")
    (demo / "summary.json").write_text("{}")
    make_run(tmp_path, "plain", t0=900_000.0)
    (tmp_path / "half-made").mkdir()
    (tmp_path / "half-made" / "config.json").write_text("{}")  # a run that died before its first status
    runs = {r.name: r for r in scan_runs(tmp_path)}
    assert {n: r.status for n, r in runs.items()} == {"demo-1/dsrl": "finished", "demo-1/bc": "finished",
                                                     "plain": "finished", "half-made": "failed"}
    assert runs["demo-1/dsrl"].path == demo / "dsrl" and runs["demo-1/bc"].kind_label == "BC"
    assert list(runs)[:3] == ["demo-1/dsrl", "demo-1/bc", "plain"]
    assert [c.name for c in checkpoints(runs["demo-1/dsrl"].path)] == ["last"]


def test_run_status_rules():
    now = 10_000.0
    me = {"status": "running", "pid": os.getpid(), "time": 0.0}
    assert run_status(me, HOST, now - 599, now) == "running"
    assert run_status(me, HOST, now - 601, now) == "stale"  # alive but silent: hung
    assert run_status(me | {"time": now - 5}, HOST, None, now) == "running"  # just started, no metrics yet
    assert run_status({"status": "running", "pid": 4_200_000}, HOST, now, now) == "stale"
    assert run_status({"status": "running", "pid": 1}, "other", now - 601, now) == "stale"
    assert run_status({"status": "running", "pid": 1}, "other", now - 599, now) == "running"
    assert run_status({}, HOST, None, now) == "failed"


def test_sps_from_steps_and_times_without_an_sps_metric():
    records = [{"step": 1000, "time": 10.0}, {"step": 3000, "time": 14.0}]
    assert sps_of(records) == pytest.approx(500.0)
    assert sps_of(records[:1]) is None


def test_metric_tail_waits_for_torn_lines_and_restarts_after_a_rewrite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2')
    tail = MetricTail(path)
    assert [r["step"] for r in tail.poll()] == [1]
    with open(path, "a") as f:
        f.write('.0}\n{"step": 3, "a": NaN}\n')
    assert [r["step"] for r in tail.poll()] == [2, 3]
    assert tail.series("a") == ([1.0, 2.0], [1.0, 2.0])  # the NaN is not plotted
    assert tail.poll() == [] and not tail.reset
    # A resumed run rewinds its metrics (atomic rewrite: a new file).
    tmp = tmp_path / "m.tmp"
    tmp.write_text('{"step": 1, "a": 5.0}\n')
    tmp.replace(path)
    assert [r["a"] for r in tail.poll()] == [5.0] and tail.reset
    assert tail.series("a") == ([1.0], [5.0])
    assert tail.keys() == ["a"]


def test_checkpoints_config_and_resume_command(tmp_path):
    d = make_run(tmp_path, "r1")
    (d / "checkpoints" / "torn.json").write_text("{}")  # no weights: not a checkpoint
    (ck,) = checkpoints(d)
    assert ck.name == "last" and ck.size_bytes == 2_000_002
    lines = config_lines(json.loads((d / "config.json").read_text()))
    assert lines[0] == "command = /usr/bin/steer dsrl --name r1"
    assert "config.sac.batch = 256" in lines and "config.lr = 0.0003" in lines
    assert resume_argv(json.loads((d / "config.json").read_text())) == ["dsrl", "--name", "r1", "--resume"]


FAKE_TRAINER = textwrap.dedent('''
    """Writes a run directory like steer.ops.run.Run: status with its pid, a metric line every 50 ms."""
    import json, os, signal, sys, time
    from pathlib import Path
    args = sys.argv[1:]
    name = args[args.index("--name") + 1]
    run = Path(os.environ["FAKE_RUNS"]) / name
    run.mkdir(parents=True, exist_ok=True)
    resume = "--resume" in args
    if not resume:
        (run / "config.json").write_text(json.dumps({"kind": "dsrl", "config": {}, "host": os.uname().nodename,
                                                     "command": [sys.argv[0], *args]}))
    def status(s):
        tmp = run / "status.tmp"
        tmp.write_text(json.dumps({"status": s, "kind": "dsrl", "pid": os.getpid(), "time": time.time()}))
        tmp.replace(run / "status.json")
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    step = 0
    if resume:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        step = json.loads(lines[-1])["step"]
    status("running")
    with open(run / "metrics.jsonl", "a", buffering=1) as f:
        while not stop:
            step += 100
            f.write(json.dumps({"step": step, "time": time.time(), "charts/success_rate": step / 1e5}) + "\\n")
            time.sleep(0.05)
    status("failed")
''')


@pytest.fixture
def fake_steer(tmp_path, monkeypatch):
    script = tmp_path / "fake_steer.py"
    script.write_text(FAKE_TRAINER)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("FAKE_RUNS", str(runs))
    return (sys.executable, str(script)), runs


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_jobs_start_stop_and_resume_a_child_process(fake_steer):
    steer, runs = fake_steer
    jobs = RunJobs(runs, steer)
    job = jobs.start("steer dsrl --name j1")
    assert job.run_name == "j1"
    assert _wait(lambda: (r := read_run(runs / "j1")) is not None and r.status == "running" and r.step >= 300)
    run = read_run(runs / "j1")
    assert run.pid == job.process.pid
    jobs.stop(run)
    assert job.process.wait(10) == 0 and job.stopped_by_operator
    stopped = read_run(runs / "j1")
    assert stopped.status == "failed"
    resumed = jobs.resume(stopped)
    assert resumed.argv[-1] == "--resume"
    assert _wait(lambda: read_run(runs / "j1").step > stopped.step and read_run(runs / "j1").status == "running")
    jobs.stop_all()
    assert resumed.process.returncode == 0
    ended = jobs.reap()
    assert ended == [job, resumed] and jobs.reap() == []
    # A command that fails at once: its exit code and last line are there to show.
    bad = jobs.start(["dsrl"])  # no --name: the fake trainer fails
    assert bad.process.wait(10) == 1 and jobs.reap() == [bad]
    assert bad.last_line() == "ValueError: '--name' is not in list"


# -- the app, headless -------------------------------------------------------------------

def _settings(runs, **kw):
    from steer.ops.console.app import ConsoleSettings

    kw.setdefault("refresh_s", 0.2)
    return ConsoleSettings(runs=runs, policies=kw.pop("policies", runs.parent / "policies"), **kw)


_until = until


@headless
async def test_runs_screen_start_stop_resume_and_compare(fake_steer):
    from textual.widgets import DataTable

    from steer.ops.console.app import ConsoleApp

    steer, runs = fake_steer
    make_run(runs, "old-ppo", kind="ppo", key="charts/route_completion", n=30)
    make_run(runs, "dsrl-a", n=10, t0=900_000.0)
    app = ConsoleApp(_settings(runs, steer=steer))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 2 and screen.selected == "old-ppo"
        assert screen.metric == "charts/route_completion"
        # Start a run by typing its command line.
        await pilot.press("s")
        await pilot.press(*"dsrl --name live")
        await pilot.press("enter")
        assert await _until(pilot, lambda: "live" in screen.runs and screen.runs["live"].status == "running")
        assert table.row_count == 3
        job = app.jobs.job_for("live")
        assert job is not None and job.argv[:2] == list(steer)
        # Select it: its curve is plotted, growing as the child writes.
        table.move_cursor(row=table.get_row_index("live"))
        await pilot.pause()
        assert screen.selected == "live" and screen.metric == "charts/success_rate"
        n0 = len(screen.tail("live").series("charts/success_rate")[0])
        assert await _until(pilot, lambda: len(screen.tail("live").records) > n0 + 5)
        # Stop asks first; "n" keeps it running.
        await pilot.press("x", "n")
        await pilot.pause(0.3)
        assert job.running
        await pilot.press("x", "y")
        assert await _until(pilot, lambda: screen.runs["live"].status == "failed")
        step = screen.runs["live"].step
        await pilot.press("r")
        assert await _until(pilot, lambda: screen.runs["live"].status == "running" and screen.runs["live"].step > step)
        # Compare: mark "live", then look at the other run: both curves share the plot.
        await pilot.press("c")
        table.move_cursor(row=table.get_row_index("dsrl-a"))
        await pilot.pause()
        assert screen.plotted == ["dsrl-a", "live"]
        table.move_cursor(row=table.get_row_index("old-ppo"))
        await pilot.pause()
        assert screen.compare_with == "live" and screen.selected == "old-ppo"
        assert screen.plotted == ["old-ppo"]  # live has no route completion
        await pilot.press("m", "m")  # metrics in name order: SPS, route_completion, q, then around
        assert screen.metric == "charts/SPS"
        await pilot.pause(0.3)
        assert screen.plotted == ["old-ppo"]  # the fake trainer logs no SPS
        await pilot.press("m")
        assert screen.metric == "charts/route_completion"
        app.jobs.stop_all()


@headless
async def test_config_and_checkpoint_tabs_show_the_selected_run(tmp_path):
    from textual.widgets import DataTable, Static

    from steer.ops.console.app import ConsoleApp

    runs = tmp_path / "runs"
    make_run(runs, "a", n=5)
    app = ConsoleApp(_settings(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = str(app.screen.query_one("#config", Static).render())
        assert "config.sac.batch = 256" in text
        ck = app.screen.query_one("#checkpoints", DataTable)
        assert ck.row_count == 1 and ck.get_row_at(0)[:2] == ["last", "2.00 MB"]


@headless
async def test_a_scan_that_lands_while_the_console_closes_is_dropped(tmp_path):
    """The runs folder is scanned on a thread; its result can arrive after the screen's widgets are gone."""
    from textual.widgets import DataTable

    from steer.ops.console.app import ConsoleApp
    from steer.ops.run import scan_runs

    runs = tmp_path / "runs"
    make_run(runs, "a", n=5)
    app = ConsoleApp(_settings(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        make_run(runs, "b", n=5)
        infos = scan_runs(runs)
        await screen.query_one("#runs", DataTable).remove()
        screen.show_runs(infos)  # raised NoMatches before: the app failed as it closed
        await pilot.pause()
        assert set(screen.runs) == {"a"}, "a dropped scan must not half-apply"


@headless
async def test_help_lists_every_binding(tmp_path):
    from steer.ops.console.app import ConsoleApp, binding_table

    app = ConsoleApp(_settings(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        text = " ".join(str(s.render()) for s in app.screen.query("Static"))
        rows = binding_table()
        assert len(rows) >= 16
        for _, keys, desc in rows:
            assert desc in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


# -- policies ------------------------------------------------------------------------------

def _operator_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _verified(key, message, command: str, sha256: str, namespace: str = ""):
    """The operator command in ``message`` as the robot checks it: signed by ``key``, for this robot."""
    from steer.robot.keys import CommandVerifier, public_key_hex
    from steer.robot.spec import OperatorCommand

    verifier = CommandVerifier([public_key_hex(key.public_key())], namespace=namespace)
    return verifier.verify(OperatorCommand.from_message(message), command, sha256)


def _robot_config():
    from steer.robot.processes import robot_config

    return robot_config()


@headless
async def test_policies_screen_lists_specs_and_promotes(tmp_path, monkeypatch):
    from textual.widgets import DataTable

    from steer.ops.console.app import ConsoleApp
    from steer.ops.console.robot import RobotLink

    monkeypatch.chdir(tmp_path)
    runs, policies = Path("runs"), Path("policies")
    make_run(runs, "dsrl-push", n=5)
    policies.mkdir()
    make_policy(policies / "good.onnx", bias=[0.05, 0.0])
    (policies / "junk.onnx").write_bytes(b"not onnx")
    make_policy(policies / "wrong-joints.onnx", action_names=("elbow", "wrist"))

    def exporter(run, out):  # stands in for steer export: the same file a real export writes
        make_policy(out, bias=[0.01, 0.0], spec_overrides={"source_run": str(run)})
        return {}

    key = _operator_key()
    transport = MemoryTransport()
    link = RobotLink(_robot_config(), transport=transport, key=key)
    app = ConsoleApp(_settings(runs, policies=policies, robot_config=_robot_config(), exporter=exporter), link=link)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        screen = app.screen
        table = screen.query_one("#policies", DataTable)
        assert table.row_count == 3
        kinds = {table.get_row(k)[0]: table.get_row(k)[1] for k in table.rows}
        assert kinds["good.onnx"] == "dsrl" and kinds["junk.onnx"] == "[red]invalid[/]"
        # A file whose joints are not the robot's is refused by the runtime checks: nothing is sent.
        table.move_cursor(row=table.get_row_index(str(policies / "wrong-joints.onnx")))
        await pilot.press("a", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "/operator_command" not in transport.sent
        table.move_cursor(row=table.get_row_index(str(policies / "good.onnx")))
        await pilot.press("a", "y")
        assert await _until(pilot, lambda: "/operator_command" in transport.sent)
        (sent,) = transport.sent["/operator_command"]
        cmd = _verified(key, sent, "promote", sha256_file(policies / "good.onnx"))
        assert cmd.args == {"policy": "good.onnx"}  # relative to the policies directory, never absolute
        # Promote a run: pick it, confirm; it is exported next to the others and sent.
        await pilot.press("p")
        await pilot.press("enter")  # the only run with checkpoints
        await pilot.press("y")
        assert await _until(pilot, lambda: len(transport.sent.get("/operator_command", [])) == 2)
        cmd = OperatorCommand.from_message(transport.sent["/operator_command"][-1])
        promoted = policies / cmd.args["policy"]
        _verified(key, transport.sent["/operator_command"][-1], "promote", sha256_file(promoted))
        assert promoted.is_file() and promoted.name.startswith("dsrl-push-") and table.row_count == 4
        assert "waiting for the node" in str(screen.query_one("#active").render())
        # The node confirms through its safety state.
        from steer.robot import messages as m

        transport.publisher("/safety_state", m.DiagnosticStatus).publish(m.DiagnosticStatus(values=[
            m.KeyValue("mode", "running"), m.KeyValue("policy", str(promoted.resolve())),
            m.KeyValue("policy_sha256", sha256_file(promoted))]))
        await pilot.pause(0.7)
        assert "active" in str(screen.query_one("#active").render())


# -- snapshots (80x24) -----------------------------------------------------------------------

def _snapshot_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    make_run(runs, "dsrl-push", status="running", pid=os.getpid(), n=40, t0=time.time() - 40)
    make_run(runs, "carl-town", kind="ppo", key="charts/route_completion", n=30, t0=1_000_200.0)
    make_run(runs, "dsrl-lr1e-3", status="failed", n=12, t0=1_000_100.0)
    make_run(runs, "dsrl-crashed", status="running", pid=2 ** 22 + 7, n=8, t0=1_000_000.0)
    return runs


def test_snapshot_runs(snap_compare, tmp_path, monkeypatch):
    from steer.ops.console.app import ConsoleApp

    app = ConsoleApp(_settings(_snapshot_runs(tmp_path, monkeypatch), refresh_s=60))
    assert snap_compare(app, terminal_size=(80, 24))


def test_snapshot_runs_compare(snap_compare, tmp_path, monkeypatch):
    from steer.ops.console.app import ConsoleApp

    app = ConsoleApp(_settings(_snapshot_runs(tmp_path, monkeypatch), refresh_s=60))
    assert snap_compare(app, terminal_size=(80, 24), press=["down", "down", "c", "up", "up"])


def test_snapshot_help(snap_compare, tmp_path, monkeypatch):
    from steer.ops.console.app import ConsoleApp

    app = ConsoleApp(_settings(_snapshot_runs(tmp_path, monkeypatch), refresh_s=60))
    assert snap_compare(app, terminal_size=(80, 24), press=["question_mark"])


def test_snapshot_policies(snap_compare, tmp_path, monkeypatch):
    from steer.ops.console.app import ConsoleApp

    runs = _snapshot_runs(tmp_path, monkeypatch)
    Path("policies").mkdir()
    make_policy(Path("policies") / "dsrl-push-20260101-120000.onnx", spec_overrides={"source_run": "runs/dsrl-push"})
    make_policy(Path("policies") / "carl-town.onnx", kind="ppo", spec_overrides={"source_run": "runs/carl-town"})
    for i, p in enumerate(sorted(Path("policies").glob("*.onnx"))):
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    app = ConsoleApp(_settings(runs, policies=Path("policies"), refresh_s=60))
    assert snap_compare(app, terminal_size=(80, 24), press=["3"])


def test_snapshot_robots(snap_compare, tmp_path, monkeypatch):
    from steer.ops.console.app import ConsoleApp
    from steer.ops.console.robot import RobotLink, RobotView

    link = RobotLink(_robot_config(), domain_id=7, transport=MemoryTransport())
    link.view = RobotView(connected=True, joints={"pusher_x": (-0.1432, 0.05), "pusher_y": (0.0121, 0.0),
                                                  "puck_x": (0.0213, 0.0), "puck_y": (-0.0087, 0.0)},
                          joint_age_s=0.01, command=[0.05, 0.0], command_age_s=0.02, commands_per_s=20.0,
                          mode="running", reason="running", interventions={"clipped": 3, "watchdog_trips": 1,
                                                                           "non_finite": 0},
                          latency_ms=1.4, latency_max_ms=6.2)
    monkeypatch.setattr(link, "poll", lambda now_ns=None: link.view)
    app = ConsoleApp(_settings(_snapshot_runs(tmp_path, monkeypatch), refresh_s=60), link=link)
    assert snap_compare(app, terminal_size=(80, 24), press=["2"])


@headless
async def test_connect_to_a_robot_by_domain_and_namespace(tmp_path):
    from steer.ops.console.app import ConsoleApp

    app = ConsoleApp(_settings(tmp_path / "runs"))  # no robot: connected from the Robots screen
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        assert app.link is None and "not connected" in str(app.screen.query_one("#safety").render())
        await pilot.press("e")  # no robot: nothing to send, and nothing breaks
        await pilot.press("o", *"x7", "enter")
        assert app.link is None
        await pilot.press("o", *"229 arm2", "enter")
        await pilot.pause()
        assert app.link.domain_id == 229 and app.link.topics["e-stop"] == "/arm2/estop"
        assert app.link.topics["commands"] == "/arm2/pusher_velocity_controller/commands"
        assert "domain 229" in str(app.screen.query_one("#topics").render())
        # Nobody publishes there: the panel says where the console listens, not just "silent".
        await pilot.pause(0.3)
        safety = str(app.screen.query_one("#safety").render())
        assert "Nothing heard on domain 229 (namespace /arm2)" in safety and "UNKNOWN" not in safety


def test_console_command_rejects_a_bad_refresh_and_domain_id(capsys):
    from steer.ops.cli import main
    from steer.ops.console import ConsoleError
    from steer.ops.console_cmd import ConsoleConfig, console

    with pytest.raises(ConsoleError, match="refresh"):
        console(ConsoleConfig(refresh_s=0))
    for argv in (["console", "--domain-id", "300"], ["console", "--domain-id", "-1"],
                 ["robot", "sim", "--domain-id", "233"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.endswith("--domain-id must be an integer in [0, 232], got " + argv[-1] + ".") and "\n" not in err


def test_console_options_key_and_policies_folder(tmp_path):
    import yaml

    from steer.ops.console_cmd import ConsoleConfig, console_settings
    from steer.robot.config import default_config_path
    from steer.robot.keys import init_keys

    private, _ = init_keys(tmp_path / "keys")
    s = console_settings(ConsoleConfig(key=private))
    assert s.operator_key is not None and s.operator_key_error == "" and s.policies == Path("policies")
    s = console_settings(ConsoleConfig(key=tmp_path / "missing", robot=False))
    assert s.operator_key is None and s.operator_key_error.startswith("cannot read the operator key")
    # Without --policies the robot's own policies directory is the folder promotions name files in.
    limits = yaml.safe_load(default_config_path().read_text()) | {"policies_dir": "deployed"}
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(limits))
    s = console_settings(ConsoleConfig(key=private, limits=str(tmp_path / "robot.yaml")))
    assert s.policies == (tmp_path / "deployed").resolve()


def test_robot_view_says_nothing_was_heard_until_the_robot_speaks():
    from steer.ops.console.robot import RobotLink
    from steer.ops.console.robot_screen import robot_status_text
    from steer.robot import messages as m

    transport = MemoryTransport()
    link = RobotLink(_robot_config().replace(namespace="arm2"), domain_id=7, transport=transport)
    assert robot_status_text(link.poll()).startswith("[yellow b]Nothing heard on domain 7 (namespace /arm2)")
    transport.publisher("/arm2/safety_state", m.DiagnosticStatus).publish(
        m.DiagnosticStatus(values=[m.KeyValue("mode", "estopped")]))
    text = robot_status_text(link.poll())
    assert "Nothing heard" not in text and "ESTOPPED" in text and "silent" in text


def test_stop_refuses_a_run_that_is_not_running(tmp_path):
    from steer.ops.console import ConsoleError

    runs = tmp_path / "runs"
    make_run(runs, "done")
    with pytest.raises(ConsoleError, match="not running"):
        RunJobs(runs).stop(read_run(runs / "done"))
    assert signal.SIGINT  # stop uses SIGINT, as Ctrl-C would


# -- promotion with a real export ------------------------------------------------------------

def _bc_run(tiny_bc, root: Path, name: str, with_names: bool) -> Path:
    """A run directory holding the tiny BC checkpoint; ``with_names`` adds the task's names and rate
    to its metadata, as ``steer bc`` writes them."""
    import gymnasium as gym

    import steer.sim  # noqa: F401

    _, ckpt = tiny_bc
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    for f in ckpt.glob("policy.*"):
        (run / "checkpoints" / f.name).write_bytes(f.read_bytes())
    if with_names:
        from steer.agent.bc import save_policy

        env = gym.make("steer/PlanarPush-v0")
        u = env.unwrapped
        # What `steer bc` records with the weights (names, rate, limits).
        save_policy(run / "checkpoints", tiny_bc[0],
                    {"task": "steer/PlanarPush-v0", "obs_names": list(u.obs_names),
                     "action_names": list(u.action_names), "control_rate_hz": float(u.control_rate_hz),
                     "action_low": env.action_space.low.tolist(), "action_high": env.action_space.high.tolist()})
        env.close()
    return run


@pytest.mark.slow
def test_promote_exports_a_real_run_and_the_runtime_checks_it(tiny_bc, tmp_path):
    from steer.ops.console.policies import promote_run
    from steer.ops.console import ConsoleError

    config = _robot_config()
    good = promote_run(_bc_run(tiny_bc, tmp_path, "bc-named", True), tmp_path / "policies", config, now=0.0)
    assert good.path.name == f"bc-named-{time.strftime('%Y%m%d-%H%M%S', time.localtime(0.0))}.onnx"
    assert good.error == "" and good.spec.kind == "bc_diffusion" and good.spec.obs_dim == 10
    assert good.spec.source_run.endswith("bc-named") and good.spec.control_rate_hz == 20.0
    # Without observation names the robot cannot feed it: refused, and no file is left behind.
    with pytest.raises(ConsoleError, match="refuses"):
        promote_run(_bc_run(tiny_bc, tmp_path, "bc-unnamed", False), tmp_path / "policies", config, now=1.0)
    assert [p.name for p in (tmp_path / "policies").iterdir()] == [good.path.name]


def test_command_rate_averages_over_its_window_and_reads_zero_when_stale():
    from steer.ops.console.robot import command_rate

    period = 50_000_000  # 20 Hz
    steady = [i * period for i in range(100)]
    assert command_rate(steady, steady[-1]) == pytest.approx(20.0, rel=1e-6)
    # A 1 s stall and a catch-up at 0.6 of a period: the 3 s window still reads about 20 Hz
    # (a window of the last 40 commands would read up to 33 Hz).
    t, times = 0, []
    for i in range(60):
        times.append(t)
        t += period
    t += 20 * period
    for i in range(50):
        times.append(t)
        t += int(0.6 * period)
    assert 16.0 < command_rate(times, times[-1]) < 24.0
    assert command_rate(times[-40:], times[-1], window_s=100.0) > 30.0
    # Nothing for over a second: zero, as for fewer than two commands.
    assert command_rate(steady, steady[-1] + 1_100_000_000) == 0.0
    assert command_rate(steady[:1], steady[0]) == 0.0


@headless
async def test_without_a_key_the_console_still_estops_and_says_why_it_cannot_release_arm_or_promote(tmp_path):
    from steer.ops.console.app import ConsoleApp
    from steer.ops.console.robot import NO_KEY, RobotLink
    from steer.robot import messages as m

    policies = tmp_path / "policies"
    policies.mkdir()
    make_policy(policies / "good.onnx")
    transport = MemoryTransport()
    link = RobotLink(_robot_config(), transport=transport, key_error="cannot read the operator key k")
    app = ConsoleApp(_settings(tmp_path / "runs", policies=policies, robot_config=_robot_config()), link=link)
    async with app.run_test(size=(80, 24)) as pilot:
        transport.publisher("/safety_state", m.DiagnosticStatus).publish(m.DiagnosticStatus(values=[
            m.KeyValue("mode", "estopped"), m.KeyValue("policy_sha256", "ab" * 32)]))
        said: list[str] = []
        for screen in ("2", "3"):
            await pilot.press(screen)
            await pilot.pause()
            app.screen.notify = lambda message, **kw: said.append(message)  # notices expire; keep them
            await pilot.press(*{"2": ["e", "R", "A"], "3": ["a", "p"]}[screen])
            await pilot.pause()
        assert sum(msg.startswith(NO_KEY) and "cannot read the operator key k" in msg for msg in said) == 4, said
        assert type(app.screen).__name__ == "PoliciesScreen"  # no dialog was opened
        assert [b.data for b in transport.sent["/estop"]] == [True]
        assert "/operator_command" not in transport.sent


@headless
async def test_add_an_onnx_file_by_path_and_release_and_arm_name_the_active_policy(tmp_path):
    from steer.ops.console.app import ConsoleApp
    from steer.ops.console.robot import RobotLink
    from steer.robot import messages as m

    policies, elsewhere = tmp_path / "policies", tmp_path / "exported"
    elsewhere.mkdir()
    make_policy(elsewhere / "fresh.onnx", bias=[0.02, 0.0])
    (elsewhere / "junk.onnx").write_bytes(b"not onnx")
    key = _operator_key()
    transport = MemoryTransport()
    link = RobotLink(_robot_config(), transport=transport, key=key)
    app = ConsoleApp(_settings(tmp_path / "runs", policies=policies, robot_config=_robot_config()), link=link)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "plus", *str(elsewhere / "junk.onnx"), "enter")
        await pilot.pause()
        assert not policies.exists() or not any(policies.iterdir())  # refused: not a steer policy
        await pilot.press("plus", *str(elsewhere / "fresh.onnx"), "enter")
        await pilot.pause()
        assert (policies / "fresh.onnx").read_bytes() == (elsewhere / "fresh.onnx").read_bytes()
        assert app.screen.selected == str(policies / "fresh.onnx")
        # Release and arm: before the node reports its policy there is nothing to bind them to.
        await pilot.press("2", "R", "y")
        await pilot.pause()
        assert "/operator_command" not in transport.sent
        sha = sha256_file(elsewhere / "fresh.onnx")
        transport.publisher("/safety_state", m.DiagnosticStatus).publish(m.DiagnosticStatus(values=[
            m.KeyValue("mode", "estopped"), m.KeyValue("policy_sha256", sha)]))
        await pilot.pause(0.3)
        await pilot.press("R", "y", "A", "y")
        await pilot.pause()
        release, arm = transport.sent["/operator_command"]
        assert _verified(key, release, "release", sha).command == "release"
        assert _verified(key, arm, "arm", sha).command == "arm"
        assert [b.data for b in transport.sent["/estop"]] == [False]  # the e-stop let go before the release
