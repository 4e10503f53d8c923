"""Operator keys and signed commands: what a robot accepts and what it refuses."""

from __future__ import annotations

import stat
from dataclasses import replace

import pytest

from steer.robot.errors import RobotError
from steer.robot.keys import (
    CommandRefused, CommandVerifier, init_keys, load_private_key, parse_public_key, public_key_hex, sign_command,
)
from steer.robot.spec import OperatorCommand, WireError

SHA = "ab" * 32


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def operator(tmp_path):
    priv, pub = init_keys(tmp_path / "keys", comment="alice@console")
    return load_private_key(priv), pub.read_text()


def test_init_keys_private_is_0600_and_refuses_to_overwrite(tmp_path):
    priv, pub = init_keys(tmp_path / "k")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert pub.read_text().startswith("ed25519 ") and len(pub.read_text().split()[1]) == 64
    with pytest.raises(RobotError, match="exists"):
        init_keys(tmp_path / "k")
    first = pub.read_text()
    init_keys(tmp_path / "k", overwrite=True)
    assert pub.read_text() != first


def test_private_key_readable_by_others_is_refused(tmp_path):
    priv, _ = init_keys(tmp_path / "k")
    priv.chmod(0o644)
    with pytest.raises(RobotError, match="chmod 600"):
        load_private_key(priv)


def test_valid_command_is_accepted_once(operator):
    key, pub = operator
    clock = FakeClock()
    v = CommandVerifier([pub], namespace="/arm1", clock=clock)
    cmd = sign_command(key, "arm", "/arm1", SHA, now=clock())
    assert v.verify(cmd, "arm", SHA) is cmd
    with pytest.raises(CommandRefused, match="replayed"):
        v.verify(cmd, "arm", SHA)


def test_wire_round_trip_keeps_the_signature_valid(operator):
    key, pub = operator
    clock = FakeClock()
    cmd = sign_command(key, "promote", "/arm1", SHA, args={"policy": "p.onnx"}, now=clock() + 0.123456789)
    back = OperatorCommand.from_fields(cmd.to_fields())
    assert back == cmd
    assert OperatorCommand.from_message(cmd.to_message("arm1")) == cmd
    CommandVerifier([pub], "/arm1", clock=clock).verify(back, "promote", SHA)


@pytest.mark.parametrize("change, reason", [
    (dict(command="release"), "signature does not match"),
    (dict(namespace="/arm2"), "signature does not match"),
    (dict(policy_sha256="cd" * 32), "signature does not match"),
    (dict(args={"policy": "other.onnx"}), "signature does not match"),
    (dict(timestamp=1_000_001.0), "signature does not match"),
    (dict(signature=""), "not signed"),
    (dict(signature="zz"), "signature does not match"),
    (dict(key_id="0" * 16), "not signed by a key this robot trusts"),
])
def test_tampered_or_unsigned_commands_are_refused(operator, change, reason):
    key, pub = operator
    clock = FakeClock()
    cmd = sign_command(key, "promote", "/arm1", SHA, args={"policy": "p.onnx"}, now=clock())
    with pytest.raises(CommandRefused, match=reason):
        CommandVerifier([pub], "/arm1", clock=clock).verify(replace(cmd, **change), "promote", SHA)


def test_wrong_command_robot_policy_and_untrusted_key(operator, tmp_path):
    key, pub = operator
    clock = FakeClock()
    v = CommandVerifier([pub], "/arm1", clock=clock)
    with pytest.raises(CommandRefused, match="for 'arm'"):
        v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock()), "release", SHA)
    with pytest.raises(CommandRefused, match="another robot"):
        v.verify(sign_command(key, "arm", "/arm2", SHA, now=clock()), "arm", SHA)
    with pytest.raises(CommandRefused, match="another policy"):
        v.verify(sign_command(key, "arm", "/arm1", "cd" * 32, now=clock()), "arm", SHA)
    mallory, _ = init_keys(tmp_path / "mallory")
    with pytest.raises(CommandRefused, match="trusts"):
        v.verify(sign_command(load_private_key(mallory), "arm", "/arm1", SHA, now=clock()), "arm", SHA)
    with pytest.raises(CommandRefused, match="trusts no operator key"):
        CommandVerifier([], "/arm1", clock=clock).verify(sign_command(key, "arm", "/arm1", SHA), "arm", SHA)


def test_stale_and_future_commands_are_refused(operator):
    key, pub = operator
    clock = FakeClock()
    v = CommandVerifier([pub], "/arm1", max_age_s=30.0, clock=clock)
    with pytest.raises(CommandRefused, match="stale"):
        v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock() - 31.0), "arm", SHA)
    with pytest.raises(CommandRefused, match="stale"):
        v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock() + 31.0), "arm", SHA)
    v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock() - 29.0), "arm", SHA)


def test_nonce_memory_is_bounded_and_expires(operator):
    key, pub = operator
    clock = FakeClock()
    v = CommandVerifier([pub], "/arm1", max_age_s=10.0, clock=clock, max_nonces=3)
    for _ in range(3):
        v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock()), "arm", SHA)
    with pytest.raises(CommandRefused, match="too many"):
        v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock()), "arm", SHA)
    clock.t += 11.0  # the three remembered nonces are now outside the window
    v.verify(sign_command(key, "arm", "/arm1", SHA, now=clock()), "arm", SHA)
    assert len(v._seen) == 1


def test_malformed_fields_and_keys_give_one_sentence():
    with pytest.raises(WireError, match="malformed"):
        OperatorCommand.from_fields({"command": "arm", "timestamp": "abc", "nonce": "x"})
    with pytest.raises(WireError, match="malformed"):
        OperatorCommand.from_fields({"command": "arm", "timestamp": "nan", "nonce": "x"})
    with pytest.raises(WireError, match="malformed"):
        OperatorCommand.from_fields({"command": "arm", "timestamp": "1", "nonce": "x", "args": "[1]"})
    with pytest.raises(RobotError, match="not an Ed25519 public key"):
        parse_public_key("ed25519 1234")


def test_public_key_line_and_hex_parse_to_the_same_key(operator):
    _, pub = operator
    assert public_key_hex(parse_public_key(pub)) == public_key_hex(parse_public_key(pub.split()[1]))
