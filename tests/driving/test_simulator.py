"""Simulator: kinematics, traffic, and every termination with a constructed case."""

import numpy as np
import pytest

from steer.driving.geometry import wrap_angle
from steer.driving.roadmap import (
    CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, CW_OFFROAD, LIGHT_GREEN, LIGHT_RED, ROAD_LANE,
)
from tests.driving.conftest import first_lit_stop, make_sim

ZERO = np.zeros((1, 2), np.float32)


def force_light(sim, light, state):
    """Set the group offset of ``light`` so that it shows ``state`` at the sim's time (and 0.5 s later)."""
    m = sim.map
    g = m.light_group[light]
    for off in np.arange(0.0, m.light_cycle[light], 0.25):
        ok = all(m.light_state(np.array([light]), np.array([sim.t[0] + dt]), np.array([off]))[0] == state
                 for dt in (0.0, 0.1, 0.2, 0.5))
        if ok:
            sim.group_offset[0, g] = off
            return
    raise AssertionError("no offset gives that state")


def place_ego(sim, x, y, yaw, v=0.0):
    sim.x[0], sim.y[0], sim.yaw[0], sim.v[0] = x, y, yaw, v


def test_bicycle_straight_acceleration(small_world):
    sim = make_sim(small_world, n_npcs=0)
    x0, y0, yaw = sim.x[0], sim.y[0], sim.yaw[0]
    a = np.array([[0.0, 1.0]], np.float32)  # 3 m/s^2
    for _ in range(10):
        sim.step(a)
    assert np.isclose(sim.v[0], 3.0)
    # 0.5 a t^2 = 1.5 m along the heading, no lateral drift
    assert np.isclose(np.hypot(sim.x[0] - x0, sim.y[0] - y0), 1.5)
    assert np.isclose(sim.yaw[0], yaw) and np.isclose(sim.distance[0], 1.5)


def test_bicycle_turn_rate(small_world):
    sim = make_sim(small_world, n_npcs=0)
    sim.v[0] = 5.0
    yaw0 = sim.yaw[0]
    sim.step(np.array([[0.5, 0.0]], np.float32))
    delta = 0.5 * sim.cfg.max_steer
    beta = np.arctan(0.5 * np.tan(delta))
    expected = 5.0 / (sim.cfg.wheelbase / 2) * np.sin(beta) * 0.1
    assert np.isclose(wrap_angle(sim.yaw[0] - yaw0), expected)


def test_collision_with_vehicle_ahead(small_world):
    sim = make_sim(small_world, n_npcs=1)
    lane = sim.pool.point_lane[0, 20]
    sim.n_lane[0, 0], sim.n_s[0, 0], sim.n_v[0, 0] = lane, sim.pool.point_lane_s[0, 20], 0.0
    sim.n_next[0, 0] = sim.map.lane_succ[lane, 0]
    # ego 3 m behind the vehicle's centre: boxes of 4.5 m overlap by 1.5 m
    x, y, h = sim.map.lane_pose(np.array([lane]), np.array([sim.pool.point_lane_s[0, 20] - 3.0]))
    place_ego(sim, x[0], y[0], h[0])
    res = sim.step(ZERO)
    assert res.infractions["collision_vehicle"][0] and res.terminated[0]
    # 5 m behind: no overlap, but at 8 m/s the 0.5 s look-ahead overlaps: TTC violation only
    sim = make_sim(small_world, n_npcs=1)
    sim.n_lane[0, 0], sim.n_s[0, 0], sim.n_v[0, 0] = lane, sim.pool.point_lane_s[0, 20], 0.0
    sim.n_next[0, 0] = sim.map.lane_succ[lane, 0]
    x, y, h = sim.map.lane_pose(np.array([lane]), np.array([sim.pool.point_lane_s[0, 20] - 6.0]))
    place_ego(sim, x[0], y[0], h[0], v=8.0)
    sim.s[0] = 14.0
    res = sim.step(ZERO)
    assert not res.infractions["collision_vehicle"][0]
    assert res.ttc_violation[0]


def test_off_road_and_route_deviation(small_world):
    sim = make_sim(small_world, n_npcs=0)
    m = sim.map
    sdf = m.sdf[0]
    iy, ix = np.unravel_index(np.argmax(sdf), sdf.shape)
    x = m.grid_origin[0, 0] + (ix + 0.5) * m.grid_res
    y = m.grid_origin[0, 1] + (iy + 0.5) * m.grid_res
    place_ego(sim, x, y, 0.0)
    res = sim.step(ZERO)
    assert res.infractions["off_road"][0] and res.terminated[0]
    assert res.outside_route_lanes[0]
    assert res.infractions["route_deviation"][0] == (res.lateral[0] > 30.0)
    # Half of the box off the road is not off-road yet.
    sim = make_sim(small_world, n_npcs=0)
    res = sim.step(ZERO)
    assert not res.infractions["off_road"][0] and not res.terminated[0]


def test_route_deviation_threshold(small_world):
    sim = make_sim(small_world, n_npcs=0, route_deviation_m=2.0)
    place_ego(sim, sim.x[0] + 3.0 * np.cos(sim.yaw[0] + np.pi / 2), sim.y[0] + 3.0 * np.sin(sim.yaw[0] + np.pi / 2),
              sim.yaw[0])
    res = sim.step(ZERO)
    assert np.isclose(res.lateral[0], 3.0, atol=0.05) and res.infractions["route_deviation"][0]


def test_outside_route_lanes_on_oncoming_carriageway(small_world):
    sim = make_sim(small_world, n_npcs=0)
    m = sim.map
    # Any road lane whose carriageway the route does not use.
    other = [ln for ln in range(m.n_lanes) if m.lane_kind[ln] == ROAD_LANE
             and not sim.pool.carriageway_mask[0, m.lane_carriageway[ln]]]
    x, y, h = m.lane_pose(np.array([other[0]]), np.array([10.0]))
    place_ego(sim, x[0], y[0], h[0])
    res = sim.step(ZERO)
    assert res.outside_route_lanes[0] and not res.infractions["off_road"][0]
    assert m.carriageway_at(np.array([0]), x, y)[0] != CW_OFFROAD
    # On the route: inside
    sim = make_sim(small_world, n_npcs=0)
    assert not sim.step(ZERO).outside_route_lanes[0]


@pytest.mark.parametrize("state,expect", [(LIGHT_RED, True), (LIGHT_GREEN, False)])
def test_red_light_crossing(small_world, state, expect):
    sim = make_sim(small_world, n_npcs=0)
    pool = sim.pool
    assert pool.stop_count[0] > 0
    s_stop, light = first_lit_stop(pool)
    # 0.3 m before the stop line at 10 m/s: the next step crosses it.
    s0 = s_stop - 0.3
    x = np.interp(s0, pool.s[0], pool.pts[0, :, 0])
    y = np.interp(s0, pool.s[0], pool.pts[0, :, 1])
    i = int(s0 / pool.spacing[0])
    place_ego(sim, x, y, pool.heading[0, i], v=10.0)
    sim.s[0], sim.seg[0] = s0, i
    force_light(sim, light, state)
    res = sim.step(ZERO)
    assert res.infractions["red_light"][0] == expect
    assert res.terminated[0] == expect


def test_blocked_after_standing(small_world):
    sim = make_sim(small_world, n_npcs=0, blocked_s=1.0)
    for k in range(9):
        assert not sim.step(ZERO).infractions["blocked"][0], k
    res = sim.step(ZERO)
    assert res.infractions["blocked"][0] and res.terminated[0]


def test_timeout(small_world):
    sim = make_sim(small_world, n_npcs=0, timeout_base_s=0.5, timeout_speed=1e12, timeout_light_cycles=0.0,
                   timeout_junction_s=0.0)
    for _ in range(4):
        assert not sim.step(ZERO).infractions["timeout"][0]
    res = sim.step(ZERO)
    assert res.infractions["timeout"][0] and res.terminated[0]


def test_finish_is_not_a_termination(small_world):
    sim = make_sim(small_world, n_npcs=0)
    pool = sim.pool
    n = pool.n[0]
    place_ego(sim, pool.pts[0, n - 2, 0], pool.pts[0, n - 2, 1], pool.heading[0, n - 2], v=5.0)
    sim.s[0] = (n - 3) * pool.spacing[0]
    res = sim.step(ZERO)
    assert res.finished[0] and not res.terminated[0]
    assert res.route_completion[0] == 1.0


def test_route_completion_is_monotone(small_world):
    sim = make_sim(small_world, n_npcs=0)
    sim.step(np.array([[0.0, 1.0]], np.float32))
    sim.step(np.array([[0.0, 1.0]], np.float32))
    s1 = sim.s[0]
    assert s1 > 0
    # Teleport 5 m back along the route: completion must not fall.
    place_ego(sim, sim.pool.pts[0, 0, 0], sim.pool.pts[0, 0, 1], sim.yaw[0])
    res = sim.step(ZERO)
    assert sim.s[0] == s1 and res.progress_pct[0] == 0.0


def test_traffic_follows_and_stops_at_red(small_world):
    sim = make_sim(small_world, n_npcs=2)
    m = sim.map
    # Two vehicles on one long lit road lane: the leader stands, the follower must stop behind it.
    lit = [ln for ln in range(m.n_lanes) if m.lane_kind[ln] == ROAD_LANE and m.lane_length[ln] > 45
           and m.lane_light[m.lane_succ[ln, 0]] >= 0]
    lane = lit[0]
    succ = m.lane_succ[lane, 0]
    sim.n_lane[0] = lane
    sim.n_next[0] = succ
    sim.n_s[0] = [m.lane_length[lane] - 3.0, 2.0]
    sim.n_v[0] = [0.0, 8.0]
    place_ego(sim, -1e4, -1e4, 0.0)  # out of the way
    light = m.lane_light[succ]
    for _ in range(200):
        force_light(sim, light, LIGHT_RED)
        sim.step(ZERO)
    gap = sim.n_s[0, 0] - sim.n_s[0, 1] - 4.5
    assert sim.n_lane[0, 0] == lane and sim.n_lane[0, 1] == lane
    assert sim.n_v[0].max() < 0.05
    assert 0.5 < gap < 4.0
    # the leader stopped before the stop line (front bumper not past the lane end)
    assert sim.n_s[0, 0] + 2.25 <= m.lane_length[lane] + 1e-6


def test_start_anywhere_starts_on_the_route_at_a_comfortable_speed(small_world):
    sim = make_sim(small_world, 64, start_anywhere=1.0)
    sim.reset_envs(np.arange(64), np.random.default_rng(3), routes=np.arange(64) % sim.pool.n_routes)
    r = sim.route
    assert (sim.s > 0).mean() > 0.9 and (sim.s <= sim.pool.length[r] - 30.0 + 1.0).all()
    assert (sim.v <= sim.pool.comfort_speed[r, sim.seg] + 1e-9).all() and (sim.v > 0).mean() > 0.9
    # The ego sits on its route where s says, and the first step measures progress from there.
    np.testing.assert_allclose(sim.x, sim.pool.pts[r, sim.seg, 0])
    s0 = sim.s.copy()
    res = sim.step(np.zeros((64, 2)))
    assert (res.progress_pct >= 0).all() and (sim.s - s0 < 3.0).all() and res.lateral.max() < 1.0
    # The held-out evaluation always starts at the route's start.
    from steer.driving.env import DriveEnvConfig
    from steer.driving.evaluation import heldout_env_config

    assert heldout_env_config(DriveEnvConfig(sim=sim.cfg)).sim.start_anywhere == 0.0


def test_time_budget_allows_a_light_cycle_per_signal_and_time_per_junction(small_world):
    sim = make_sim(small_world, 8)
    sim.reset_envs(np.arange(8), np.random.default_rng(0), routes=np.arange(8))
    pool, m, cfg = sim.pool, sim.map, sim.cfg
    checked = 0
    for r in range(8):
        entry = np.isfinite(pool.stop_s[r])
        lit = pool.stop_light[r][entry & (pool.stop_light[r] >= 0)]
        waits = sum(1 for c, lane in zip(pool.stop_control[r][entry], pool.stop_lane[r][entry])
                    if c in (CONTROL_STOP, CONTROL_YIELD) or (c == CONTROL_NONE and m.lane_yields[lane].any()))
        want = cfg.timeout_base_s + pool.length[r] / cfg.timeout_speed + m.light_cycle[lit].sum() + 10.0 * waits
        assert sim.time_limit[r] == pytest.approx(want)
        checked += len(lit) > 0 and waits > 0
    assert checked > 0  # some route has both kinds of allowance
