"""Anyone can stop, only an operator can start: signed release, arm and promote on the node.

Unit tests run the node on the in-memory transport and its fake clock; the tests marked slow run
the node as a real process and talk to it over DDS on loopback.
"""

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from robot_helpers import (FakeClock, MemoryTransport, arm_over_dds, make_policy, operator_key, signed,
                           trusting)
from steer.robot import messages as m
from steer.robot.config import RobotConfig, load_robot_config
from steer.robot.errors import PolicyRefused, RobotError
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.policy_node import PolicyNode
from steer.robot.promotion import NOT_AVAILABLE, PromotionRequest, file_sha256, read_policy_file
from steer.robot.spec import SafetyState

ROBOT = trusting(load_robot_config())
CMD = "/pusher_velocity_controller/commands"
HEX_RUN = re.compile(r"[0-9a-f]{6,}")  # any piece of a hash


def _node(tmp_path, config=ROBOT, bias=(0.1, 0.1), policies_dir=None):
    clock = FakeClock()
    transport = MemoryTransport(clock)
    policy = make_policy(tmp_path / "policy.onnx", bias=list(bias))
    config = config.replace(policies_dir=str(policies_dir or tmp_path))
    node = PolicyNode(config, OnnxPolicy(policy, robot=config), transport, clock=clock)
    return node, transport, clock


def _tick(node, transport, clock):
    """One observation a period later and the node's work on it; returns the last command sent (or None)."""
    clock.advance(0.05)
    transport.publisher("/goal", m.Float64MultiArray).publish(m.Float64MultiArray(data=[0.2, 0.1]))
    transport.publisher("/joint_states", m.JointState).publish(m.JointState(
        name=["pusher_x", "pusher_y", "puck_x", "puck_y"], position=[0.0] * 4, velocity=[0.0] * 4))
    node.spin_once()
    sent = transport.sent.get(CMD)
    return list(sent[-1].data) if sent else None


def _moving(transport):
    return [c.data for c in transport.sent.get(CMD, []) if any(c.data)]


def _bad(kind, node, clock, command):
    """A ``command`` for ``node`` that is wrong in one way."""
    sha = node.policy_sha256
    if kind == "unsigned":
        good = signed(command, sha, clock)
        return m.DiagnosticStatus(name=good.name, message=good.message, hardware_id=good.hardware_id,
                                  values=[kv if kv.key != "signature" else m.KeyValue("signature", "")
                                          for kv in good.values])
    if kind == "forged":  # a trusted key id on a signature by another key
        good = signed(command, sha, clock)
        forged = signed(command, sha, clock, key=operator_key(7))
        sig = {kv.key: kv.value for kv in forged.values}["signature"]
        return m.DiagnosticStatus(values=[kv if kv.key != "signature" else m.KeyValue("signature", sig)
                                          for kv in good.values])
    return {"foreign key": lambda: signed(command, sha, clock, key=operator_key(7)),
            "stale": lambda: signed(command, sha, now=clock.time_ns() / 1e9 - 31),
            "future": lambda: signed(command, sha, now=clock.time_ns() / 1e9 + 31),
            "other robot": lambda: signed(command, sha, clock, namespace="robot2"),
            "other policy": lambda: signed(command, "ab" * 32, clock),
            "malformed": lambda: m.DiagnosticStatus(values=[m.KeyValue("command", command),
                                                            m.KeyValue("timestamp", "soon")])}[kind]()


REASONS = {"unsigned": "the command is not signed", "forged": "the signature does not match the command",
           "foreign key": "not signed by a key this robot trusts", "stale": "the command is stale",
           "future": "the command is stale", "other robot": "the command is for another robot",
           "other policy": "names another policy than the one here",
           "malformed": "malformed operator command"}


@pytest.mark.parametrize("kind", list(REASONS))
def test_a_bad_arm_or_release_changes_nothing_and_is_reported(tmp_path, kind, capsys):
    node, transport, clock = _node(tmp_path)
    operator = transport.publisher("/operator_command", m.DiagnosticStatus)
    # The node starts unarmed: observations alone move nothing.
    for _ in range(3):
        _tick(node, transport, clock)
    assert not _moving(transport) and node.shield.mode.value == "idle" and not node.safety_state().armed
    operator.publish(_bad(kind, node, clock, "arm"))
    for _ in range(3):
        _tick(node, transport, clock)
    assert not _moving(transport) and not node.safety_state().armed
    state = SafetyState.from_message(transport.sent["/safety_state"][-1])
    assert state.operator_refusals == 1 and REASONS[kind] in state.last_refusal and state.mode == "idle"
    assert REASONS[kind] in capsys.readouterr().err
    # A good arm moves the robot; an e-stop stops it; a bad release leaves it stopped.
    operator.publish(signed("arm", node.policy_sha256, clock))
    assert np.allclose(_tick(node, transport, clock), [0.1, 0.1])
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    transport.publisher("/estop", m.Bool).publish(m.Bool(False))  # the button is let go
    assert _tick(node, transport, clock) == [0.0, 0.0]
    moving = len(_moving(transport))
    operator.publish(_bad(kind, node, clock, "release"))
    operator.publish(_bad(kind, node, clock, "arm"))
    for _ in range(3):
        assert _tick(node, transport, clock) == [0.0, 0.0]
    assert len(_moving(transport)) == moving and node.shield.mode.value == "estopped"
    assert node.stats.operator_refusals == 3 and REASONS[kind] in node.safety_state().last_refusal


def test_a_replayed_command_is_refused(tmp_path):
    node, transport, clock = _node(tmp_path)
    operator = transport.publisher("/operator_command", m.DiagnosticStatus)
    arm = signed("arm", node.policy_sha256, clock)
    operator.publish(arm)
    assert np.allclose(_tick(node, transport, clock), [0.1, 0.1])
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    transport.publisher("/estop", m.Bool).publish(m.Bool(False))
    release = signed("release", node.policy_sha256, clock)
    operator.publish(release)
    _tick(node, transport, clock)
    assert node.shield.mode.value == "idle"
    # Someone who recorded the operator's arm plays it back: refused, the robot stays stopped.
    operator.publish(arm)
    for _ in range(3):
        assert _tick(node, transport, clock) in ([0.0, 0.0], None)
    assert node.shield.mode.value == "idle" and node.stats.operator_refusals == 1
    assert node.safety_state().last_refusal == "arm refused: replayed (this command was already used)."
    # A recorded release played back after a new e-stop: refused too.
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    transport.publisher("/estop", m.Bool).publish(m.Bool(False))
    operator.publish(release)
    _tick(node, transport, clock)
    assert node.shield.mode.value == "estopped" and node.stats.operator_refusals == 2


def test_a_robot_that_trusts_no_key_obeys_no_command_but_still_stops(tmp_path):
    node, transport, clock = _node(tmp_path, config=load_robot_config())
    transport.publisher("/operator_command", m.DiagnosticStatus).publish(signed("arm", node.policy_sha256, clock))
    for _ in range(3):
        _tick(node, transport, clock)
    assert not _moving(transport) and "trusts no operator key" in node.safety_state().last_refusal
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    assert _tick(node, transport, clock) == [0.0, 0.0] and node.shield.mode.value == "estopped"


def test_a_new_node_starts_unarmed_after_an_arm_and_an_estop_from_anyone_stops_it(tmp_path):
    node, transport, clock = _node(tmp_path)
    transport.publisher("/operator_command", m.DiagnosticStatus).publish(signed("arm", node.policy_sha256, clock))
    assert np.allclose(_tick(node, transport, clock), [0.1, 0.1])
    # The node restarts (same transport, so an old command would still be in reach): it starts unarmed.
    node.loader.close()
    again = PolicyNode(node.config, node.policy, transport, clock=clock)
    before = len(transport.sent[CMD])
    for _ in range(5):
        _tick(again, transport, clock)
    assert len(transport.sent[CMD]) == before and again.shield.mode.value == "idle"
    assert not again.safety_state().armed


# -- promotion: only signed files of the policies directory -------------------------------------

def _promote_and_wait(node, transport, clock, name, sha256, timeout_s=5.0):
    """Publish a signed promote and spin until the node reports it (refused or active); returns seconds taken."""
    transport.publisher("/operator_command", m.DiagnosticStatus).publish(
        signed("promote", sha256, clock, args={"policy": name}))
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        node.spin_once()
        if node.promote_error or node.stats.promotions:
            break
        time.sleep(0.001)
    return time.monotonic() - start


def _policies(tmp_path):
    """A policies directory beside the running policy's, a valid policy outside it, and its hash."""
    base = tmp_path / "policies"
    base.mkdir()
    outside = make_policy(tmp_path / "outside.onnx", bias=[0.0, 0.2])
    return base, outside, file_sha256(outside)


def _case(kind, base, outside, sha):
    """(name to promote, signed sha256) for one way of pointing at a file the node must refuse."""
    if kind == "outside":
        return "../outside.onnx", sha
    if kind == "absolute":
        return str(outside), sha
    if kind == "symlink out":
        (base / "link.onnx").symlink_to(outside)
        return "link.onnx", sha
    if kind == "dev zero link":
        (base / "zero.onnx").symlink_to("/dev/zero")
        return "zero.onnx", sha
    if kind == "fifo":
        os.mkfifo(base / "fifo.onnx")
        return "fifo.onnx", sha
    if kind == "missing":
        return "missing.onnx", sha
    if kind == "directory":
        (base / "dir.onnx").mkdir()
        return "dir.onnx", sha
    if kind == "other hash":
        make_policy(base / "p.onnx", bias=[0.0, 0.1])
        return "p.onnx", sha  # the signed hash is another file's
    if kind == "oversize":  # over the limit: refused before its bytes are read
        (base / "big.onnx").write_bytes(os.urandom(5000))
        return "big.onnx", file_sha256(base / "big.onnx")
    raise AssertionError(kind)


FILE_CASES = ["outside", "absolute", "symlink out", "dev zero link", "fifo", "missing", "directory", "other hash",
              "oversize"]


@pytest.mark.parametrize("kind", FILE_CASES)
def test_a_promotion_of_anything_but_a_signed_file_in_the_policies_dir_is_refused_quickly(tmp_path, kind):
    base, outside, sha = _policies(tmp_path)
    node, transport, clock = _node(tmp_path, config=ROBOT.replace(max_policy_bytes=4000), policies_dir=base)
    name, signed_sha = _case(kind, base, outside, sha)
    assert outside.stat().st_size < 4000  # every file but the oversize one is within the limit
    old = node.policy_sha256
    taken = _promote_and_wait(node, transport, clock, name, signed_sha)
    # One sentence whatever the case: nothing tells a missing file from a present one, nor any hash.
    assert node.promote_error == NOT_AVAILABLE and taken < 1.0, (node.promote_error, taken)
    assert not HEX_RUN.search(node.promote_error) and "outside" not in node.promote_error
    assert node.stats.promotions == 0 and node.policy_sha256 == old
    assert SafetyState.from_message(transport.sent["/safety_state"][-1]).promote_error == NOT_AVAILABLE


def test_dev_zero_is_refused_before_a_byte_is_read(tmp_path):
    robot = ROBOT.replace(policies_dir="/dev")
    start = time.perf_counter()
    with pytest.raises(PolicyRefused) as err:
        read_policy_file(robot, "zero", "00" * 32)
    assert time.perf_counter() - start < 0.1 and str(err.value) == NOT_AVAILABLE


def test_a_policy_whose_spec_names_other_weights_is_refused(tmp_path):
    node, transport, clock = _node(tmp_path)
    path = make_policy(tmp_path / "lying.onnx", bias=[0.0, 0.2], spec_overrides={"weights_sha256": "ab" * 32})
    sha = file_sha256(path)
    taken = _promote_and_wait(node, transport, clock, "lying.onnx", sha)
    assert "names other weights than the graph it holds" in node.promote_error and taken < 2.0
    assert not HEX_RUN.search(node.promote_error) and node.stats.promotions == 0


def test_an_unsigned_promote_is_refused_before_the_disk_is_touched(tmp_path, monkeypatch):
    node, transport, clock = _node(tmp_path)
    path = make_policy(tmp_path / "new.onnx", bias=[0.0, 0.2])
    opened = []
    monkeypatch.setattr("steer.robot.promotion.read_policy_file", lambda *a: opened.append(a))
    transport.publisher("/operator_command", m.DiagnosticStatus).publish(
        signed("promote", file_sha256(path), clock, key=operator_key(7), args={"policy": "new.onnx"}))
    node.spin_once()
    assert node.loader.pending is None and not opened
    assert node.safety_state().last_refusal == "promote refused: not signed by a key this robot trusts."


def test_a_load_that_takes_too_long_is_refused_and_the_next_promotion_still_works(tmp_path, monkeypatch):
    import threading

    from steer.robot import promotion

    node, transport, clock = _node(tmp_path)
    new = make_policy(tmp_path / "new.onnx", bias=[0.0, 0.2])
    release = threading.Event()
    real = promotion.read_policy_file

    def stuck(robot, name, sha):  # a read that hangs (a dead network mount) until the test ends
        if name == "stuck.onnx":
            release.wait(30)
        return real(robot, name, sha)

    monkeypatch.setattr(promotion, "read_policy_file", stuck)
    node.loader.timeout_s = 0.3
    try:
        taken = _promote_and_wait(node, transport, clock, "stuck.onnx", "cd" * 32)
        assert "took longer than 0.3 s" in node.promote_error and 0.3 <= taken < 1.5
        _promote_and_wait(node, transport, clock, "new.onnx", file_sha256(new))
        assert node.stats.promotions == 1 and node.policy_sha256 == file_sha256(new)
    finally:
        release.set()


def test_read_policy_file_takes_a_file_inside_the_directory_through_an_inner_link(tmp_path):
    base = tmp_path / "policies"
    (base / "v2").mkdir(parents=True)
    path = make_policy(base / "v2" / "p.onnx")
    (base / "current.onnx").symlink_to(base / "v2" / "p.onnx")
    robot = ROBOT.replace(policies_dir=str(base))
    target, data = read_policy_file(robot, "current.onnx", file_sha256(path))
    assert target == path.resolve() and data == path.read_bytes()
    assert PromotionRequest("current.onnx", "x").policy == "current.onnx"


# -- config and CLI ------------------------------------------------------------------------------

def test_config_operator_fields_are_checked_in_one_sentence(tmp_path):
    from steer.robot.keys import public_key_hex

    hexkey = public_key_hex(operator_key().public_key())
    config = RobotConfig.from_dict({"trusted_operator_keys": [f"ed25519 {hexkey} ops@console"],
                                    "policies_dir": "~/policies", "command_max_age_s": 10})
    assert config.trusted_operator_keys == (f"ed25519 {hexkey} ops@console",)
    assert config.policies_path == Path("~/policies").expanduser().resolve()
    (tmp_path / "robot.yaml").write_text("policies_dir: policies\n")
    assert RobotConfig.from_yaml(tmp_path / "robot.yaml").policies_path == (tmp_path / "policies").resolve()
    for bad, needle in [({"trusted_operator_keys": ["abc"]}, "not a 64-hex Ed25519 public key"),
                        ({"max_policy_bytes": 0}, "max_policy_bytes must be a positive"),
                        ({"command_max_age_s": float("nan")}, "command_max_age_s must be a positive")]:
        with pytest.raises(RobotError, match=needle) as err:
            RobotConfig.from_dict(bad)
        assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_keys_init_cli_writes_a_private_key_and_prints_the_line_a_robot_trusts(tmp_path, capsys):
    from steer.ops.cli import main
    from steer.robot.keys import CommandVerifier, load_private_key, sign_command

    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--comment", "ops"]) == 0
    out = capsys.readouterr().out
    line = next(x.strip()[3:-1] for x in out.splitlines() if x.strip().startswith('- "ed25519 '))
    private = tmp_path / "k" / "operator_ed25519"
    assert private.stat().st_mode & 0o777 == 0o600
    # The printed line, pasted into a robot config, makes that robot obey this key.
    config = RobotConfig.from_dict({"trusted_operator_keys": [line]})
    cmd = sign_command(load_private_key(private), "arm", "", "ab" * 32)
    assert CommandVerifier(config.trusted_operator_keys, "").verify(cmd, "arm", "ab" * 32) == cmd
    assert main(["keys", "init", "--dir", str(tmp_path / "k")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--overwrite"]) == 0


# -- over DDS, between processes ------------------------------------------------------------------

@pytest.mark.slow
def test_over_dds_only_a_signed_arm_moves_and_a_restarted_node_starts_unarmed(robot_processes, dds_env, tmp_path):
    from steer.robot.dds_transport import DdsTransport

    policy = make_policy(tmp_path / "drive.onnx", bias=[0.04, 0.0])
    sha = file_sha256(policy)
    ns = f"op_{os.getpid()}"  # a namespace of this test alone: commands are bound to it
    robot = {"namespace": ns}
    transport = DdsTransport(dds_env["domain"])
    commands = transport.subscription(f"/{ns}{CMD}", m.Float64MultiArray)
    safety = transport.subscription(f"/{ns}/safety_state", m.DiagnosticStatus)
    operator = transport.publisher(f"/{ns}/operator_command", m.DiagnosticStatus)
    log = {"cmd": [], "safety": []}

    def pump(seconds, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            transport.wait(0.005)
            log["cmd"].extend((recv, list(c.data)) for c, recv in commands.take())
            log["safety"].extend((recv, SafetyState.from_message(s)) for s, recv in safety.take())
        return until()

    def moving_since(t):
        return [c for r, c in log["cmd"] if r > t and any(c)]

    node = robot_processes.start("node", policy=str(policy), robot=dict(robot))
    robot_processes.start("sim", episodes=1, seed=3, wait_for_node_s=40.0, task_kwargs={"max_steps": 100_000},
                          robot=dict(robot))
    assert pump(60.0, lambda: operator.matched() > 0 and log["safety"]), "the node never appeared"
    # Unsigned, foreign and stale arms from another participant: refused, reported, nothing moves.
    t0 = time.monotonic_ns()
    operator.publish(signed("arm", sha, namespace=ns, key=operator_key(7)))
    operator.publish(signed("arm", sha, namespace=ns, now=time.time() - 120))
    operator.publish(signed("arm", sha))  # for the robot without a namespace
    operator.publish(signed("arm", "ab" * 32, namespace=ns))
    assert pump(10.0, lambda: log["safety"][-1][1].operator_refusals >= 4), log["safety"][-1][1]
    pump(1.0)
    state = log["safety"][-1][1]
    assert state.operator_refusals == 4 and not state.armed and state.mode == "idle"
    assert "names another policy" in state.last_refusal and not moving_since(t0)
    # The operator's signed arm moves the robot.
    operator.publish(signed("arm", sha, namespace=ns))
    assert pump(20.0, lambda: len(moving_since(t0)) >= 5), "a signed arm did not move the robot"
    # An e-stop from a participant that signs nothing stops it at once.
    stopper = DdsTransport(dds_env["domain"])
    stopper.publisher(f"/{ns}/estop", m.Bool, latched=True).publish(m.Bool(True))
    assert pump(5.0, lambda: log["safety"][-1][1].estop_latched)
    t_stopped = time.monotonic_ns()
    pump(0.5)
    assert not moving_since(t_stopped)
    stopper.close()  # the latched press leaves with its writer; the node stays latched

    # The node restarts after its arm: it starts unarmed and nothing moves until a new signed arm.
    node.send_signal(signal.SIGKILL)
    node.wait()
    robot_processes.start("node", policy=str(policy), robot=dict(robot))
    t_restart = time.monotonic_ns()
    assert pump(60.0, lambda: any(r > t_restart for r, _ in log["safety"])), "the restarted node never reported"
    pump(2.0)
    after = [s for r, s in log["safety"] if r > t_restart]
    assert after and all(not s.armed and s.mode == "idle" for s in after)
    assert not moving_since(t_restart)
    state = arm_over_dds(transport, policy, namespace=ns)
    assert state.armed
    t_armed = time.monotonic_ns()
    assert pump(20.0, lambda: len(moving_since(t_armed)) >= 5), "the restarted node did not take a new arm"
    transport.close()


def test_a_flood_of_forged_commands_neither_stalls_the_loop_nor_delays_the_estop(tmp_path, capsys):
    from steer.robot.policy_node import MAX_OPERATOR_COMMANDS_PER_SPIN

    node, transport, clock = _node(tmp_path)
    operator = transport.publisher("/operator_command", m.DiagnosticStatus)
    operator.publish(signed("arm", node.policy_sha256, clock))
    assert np.allclose(_tick(node, transport, clock), [0.1, 0.1])
    forged = _bad("forged", node, clock, "arm")  # a trusted key id: each one costs a signature check
    for _ in range(2000):
        operator.publish(forged)
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    start = time.perf_counter()
    node.spin_once()
    spun_ms = (time.perf_counter() - start) * 1e3
    assert transport.sent[CMD][-1].data == [0.0, 0.0] and node.shield.mode.value == "estopped"
    # Unbounded, the 2000 checks took 1.3 s on an idle machine; bounded, a few ms (200 for a loaded one).
    assert node.stats.operator_refusals == 2000 and spun_ms < 200.0, spun_ms
    assert len(capsys.readouterr().err.splitlines()) == 1  # one report, not two thousand
    assert MAX_OPERATOR_COMMANDS_PER_SPIN < 20
