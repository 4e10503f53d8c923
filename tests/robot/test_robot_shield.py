"""The safety shield: no command outside the limits ever leaves it."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steer.robot.config import JointLimits, RobotConfig
from steer.robot.shield import Mode, ModeError, SafetyShield

MS = 1_000_000
LIMITS = (JointLimits("a", -0.5, 0.4, 0.3, 20.0, 2.0), JointLimits("b", -1.0, 1.0, 1.5, 5.0, 40.0))


def _config(interface="velocity", watchdog_action="hold"):
    return RobotConfig(name="t", joints=("a", "b", "c"), command_joints=LIMITS, command_interface=interface,
                       control_rate_hz=20.0, watchdog_ms=75.0, watchdog_action=watchdog_action)


def _running(config):
    shield = SafetyShield(config)
    shield.arm()
    shield.start()
    return shield


wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, np.nan, np.inf]))
vec2 = st.lists(wild, min_size=2, max_size=2)
tick = st.fixed_dictionaries({
    "proposal": st.one_of(vec2, st.lists(wild, min_size=0, max_size=4), st.none()),
    "position": st.one_of(st.none(), vec2, st.lists(st.floats(-2, 2), min_size=2, max_size=2)),
    "age_ms": st.one_of(st.none(), st.floats(0, 200)),
    "event": st.sampled_from(["", "", "", "", "arm", "start", "stop", "estop", "reset"]),
    "obs_ok": st.sampled_from([True, True, True, False]),
    "effort": st.one_of(st.none(), vec2),
})


def _apply(shield, event):
    try:
        {"": lambda: None, "arm": shield.arm, "start": shield.start, "stop": shield.stop,
         "estop": shield.estop, "reset": shield.reset_estop}[event]()
    except ModeError:
        pass


@pytest.mark.parametrize("interface", ["velocity", "position", "effort"])
@settings(max_examples=150, deadline=None)
@given(ticks=st.lists(tick, min_size=1, max_size=40))
def test_no_command_outside_the_limits_ever_leaves(interface, ticks):
    shield = _running(_config(interface))
    lo = np.array([j.position_min for j in LIMITS])
    hi = np.array([j.position_max for j in LIMITS])
    vmax = np.array([j.velocity_max for j in LIMITS])
    emax = np.array([j.effort_max for j in LIMITS])
    now = 10_000 * MS
    for t in ticks:
        _apply(shield, t["event"])
        now += 50 * MS
        obs = None if t["age_ms"] is None else now - int(t["age_ms"] * MS)
        out = shield.filter(t["proposal"], now, obs, t["position"], t["effort"], observation_ok=t["obs_ok"])
        cmd = out.command
        assert cmd.shape == (2,) and cmd.dtype == np.float64 and np.all(np.isfinite(cmd))
        if interface == "velocity":
            assert np.all(np.abs(cmd) <= vmax)
            pos = np.asarray(t["position"], dtype=float) if t["position"] is not None else None
            if pos is not None and np.all(np.isfinite(pos)):
                # A joint at or beyond a bound is never driven further out.
                assert np.all(cmd[pos >= hi] <= 0) and np.all(cmd[pos <= lo] >= 0)
                inside = (pos > lo) & (pos < hi)
                assert np.all((pos + cmd * shield.dt)[inside] <= hi[inside] + 1e-12)
                assert np.all((pos + cmd * shield.dt)[inside] >= lo[inside] - 1e-12)
        elif interface == "position":
            assert np.all(cmd >= lo) and np.all(cmd <= hi)
        else:
            assert np.all(np.abs(cmd) <= emax)
        if shield.mode != Mode.RUNNING or not t["obs_ok"]:
            assert not out.from_policy


@settings(max_examples=150, deadline=None)
@given(proposals=st.lists(vec2, min_size=2, max_size=30))
def test_rate_limit_holds_while_running_inside_the_workspace(proposals):
    shield = _running(_config())
    rate = np.array([j.command_rate_max for j in LIMITS])
    previous = np.zeros(2)
    now = 0
    for p in proposals:
        now += 50 * MS
        out = shield.filter(p, now, now - 5 * MS, position=[0.0, 0.0])
        if out.from_policy:  # a safe command (stop on NaN) may jump to zero at once
            assert np.all(np.abs(out.command - previous) <= rate * shield.dt + 1e-12)
        previous = out.command


def test_hand_checked_numbers():
    shield = _running(_config())
    # Joint a: rate 2 m/s^2 at 20 Hz lets the command move 0.1 m/s per tick; joint b: 40 -> 2.0, box 1.5.
    out = shield.filter([0.3, 9.0], 100 * MS, 90 * MS, position=[0.0, 0.0])
    assert np.allclose(out.command, [0.1, 1.5]) and "rate limit" in out.reasons and "box limit" in out.reasons
    out = shield.filter([0.3, 9.0], 150 * MS, 140 * MS, position=[0.0, 0.0])
    assert np.allclose(out.command, [0.2, 1.5])
    # 0.39 m with a 0.4 m bound: at most (0.4 - 0.39) / 0.05 = 0.2 m/s outwards.
    out = shield.filter([0.3, 0.0], 200 * MS, 190 * MS, position=[0.39, 0.0])
    assert np.allclose(out.command, [0.2, 0.0]) and "position bound" in out.reasons
    # Watchdog: 76 ms old observation -> hold (zero velocity); 74 ms -> passes.
    out = shield.filter([0.1, 0.1], 300 * MS, 224 * MS, position=[0.0, 0.0])
    assert np.array_equal(out.command, [0.0, 0.0]) and out.reasons == ("watchdog: observation too old",)
    out = shield.filter([0.1, 0.1], 400 * MS, 326 * MS, position=[0.0, 0.0])
    assert np.allclose(out.command, [0.1, 0.1]) and out.from_policy
    assert shield.counters.watchdog == 1
    out = shield.filter([np.nan, 0.1], 450 * MS, 440 * MS, position=[0.0, 0.0])
    assert np.array_equal(out.command, [0.0, 0.0]) and out.reasons == ("non-finite command",)


def test_position_hold_and_zero_differ():
    hold = _running(_config("position", "hold"))
    out = hold.filter([0.1, 0.1], 200 * MS, 0, position=[0.2, -0.3])
    assert np.allclose(out.command, [0.2, -0.3])
    zero = _running(_config("position", "zero"))
    out = zero.filter([0.1, 0.1], 200 * MS, 0, position=[0.2, -0.3])
    assert np.allclose(out.command, [0.0, 0.0])


def test_measured_effort_over_bound_stops():
    shield = _running(_config())
    out = shield.filter([0.1, 0.1], 100 * MS, 99 * MS, position=[0.0, 0.0], effort=[25.0, 0.0])
    assert shield.mode == Mode.STOPPED and np.array_equal(out.command, [0.0, 0.0])


def test_estop_latches_until_explicit_reset():
    shield = _running(_config())
    shield.estop("button", 5)
    for action in (shield.arm, shield.start):
        with pytest.raises(ModeError):
            action()
    shield.stop()
    assert shield.mode == Mode.ESTOPPED
    assert np.array_equal(shield.filter([0.2, 0.2], 10 * MS, 10 * MS, [0, 0]).command, [0.0, 0.0])
    shield.reset_estop(7)
    assert shield.mode == Mode.IDLE
    shield.arm()
    shield.start()
    assert shield.mode == Mode.RUNNING
    assert [e.mode for e in shield.counters.events] == [Mode.ARMED, Mode.RUNNING, Mode.ESTOPPED, Mode.IDLE,
                                                         Mode.ARMED, Mode.RUNNING]


def test_config_rejects_bad_limits():
    from steer.robot.errors import RobotError
    bad = dataclasses.replace(LIMITS[0], position_min=1.0)
    with pytest.raises(RobotError, match="limits"):
        RobotConfig(joints=("a",), command_joints=(bad,))


def test_chunk_safe_set_predicts_positions_from_velocity_commands():
    from steer.robot.shield import ChunkSafeSet

    # Joint a spans [-0.5, 0.4] at 0.3 m/s, b spans [-1, 1] at 1.5 m/s; 20 Hz; margin 0.05.
    safe = ChunkSafeSet(_config(), position_index=[4, 1], margin=0.05)
    obs = np.zeros(6)
    obs[4], obs[1] = 0.30, 0.0
    toward = np.tile([0.3, 0.0], (8, 1))  # +0.015 m per tick: 0.30 -> 0.42 after 8 ticks
    assert not safe(obs, toward)
    assert safe(obs, toward[:3])  # 0.345 <= 0.35
    assert not safe(obs, toward[:4])  # 0.36 > 0.35: the margin counts
    assert safe(obs, -toward)  # away from the bound
    assert not safe(obs, np.tile([0.0, 1.6], (2, 1)))  # over the velocity box: the shield would change it
    obs[4] = -0.44
    assert not safe(obs, np.tile([-0.3, 0.0], (1, 1)))  # -0.455 < -0.45
    assert (safe.checks, safe.rejections) == (6, 4)


def test_chunk_safe_set_on_position_and_effort_interfaces():
    from steer.robot.shield import ChunkSafeSet

    pos = ChunkSafeSet(_config("position"), [0, 1], margin=0.1)
    assert pos(np.zeros(2), np.array([[0.2, 0.8], [0.3, -0.9]]))
    assert not pos(np.zeros(2), np.array([[0.2, 0.8], [0.31, -0.9]]))
    assert ChunkSafeSet(_config("effort"), [0, 1])(np.zeros(2), np.full((3, 2), 99.0))
    with pytest.raises(ValueError, match="no room"):
        ChunkSafeSet(_config(), [0, 1], margin=0.5)
    with pytest.raises(ValueError, match="2 commanded joints"):
        ChunkSafeSet(_config(), [0])


def test_a_safe_margin_wider_than_the_box_is_a_user_facing_error():
    from steer.ops.run import RunError
    from steer.ops.stages import chunk_safe_set
    from steer.sim.push import OBS_NAMES

    assert chunk_safe_set(OBS_NAMES, margin=0.02).lo[0] == pytest.approx(-0.36)
    with pytest.raises(RunError, match="--safe-margin: margin 0.5 leaves no room") as err:
        chunk_safe_set(OBS_NAMES, margin=0.5)
    assert err.type.user_facing
