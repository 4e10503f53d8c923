"""Road users and rules: each infraction provoked on a hand-built scene and priced by the driving score,
and traffic that stops at stop signs, yields, lets pedestrians cross, passes obstacles and changes lanes."""

import numpy as np
import pytest

from steer.driving.env import DriveEnvConfig, DriveVectorEnv
from steer.driving.geometry import boxes_overlap
from steer.driving.roadmap import (
    CONNECTOR_LANE, CONTROL_STOP, LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED, ROAD_LANE,
)
from steer.driving.simulator import DrivingSim, SimConfig, world_from_map
from steer.driving.town import TownConfig, generate_town
from tests.driving.conftest import find_entry, first_lit_stop, make_sim
from tests.driving.test_simulator import force_light

# The CARLA leaderboard's (and CaRL's) penalty factors, written out independently of driving/score.py.
FACTORS = {"collision_pedestrian": 0.5, "collision_vehicle": 0.6, "collision_static": 0.65, "red_light": 0.7,
           "stop_sign": 0.8}


def _env(world, monkeypatch, route=0, **overrides):
    sim = make_sim(world, 1, route=route, **overrides)
    env = DriveVectorEnv(1, DriveEnvConfig(sim=sim.cfg, obs="none"), autoreset=False, sim=sim)
    env.reset(seed=0, options={"routes": np.array([route])})
    # Hand-built scenes: pedestrians stay where the test puts them.
    monkeypatch.setattr(sim, "_pedestrian_step", lambda: None)
    sim.nx[:], sim.ny[:], sim.px[:], sim.py[:], sim.ox[:], sim.oy[:] = 1e4, 1e4, 1e4, 1e4, 1e4, 1e4
    sim.n_lane[:] = sim.n_lane[0, 0]
    return env, sim


def _on_route(sim, s: float, v: float = 0.0):
    pool, r = sim.pool, sim.route[0]
    i = int(s / pool.spacing[r])
    sim.x[0], sim.y[0], sim.yaw[0], sim.v[0] = pool.pts[r, i, 0], pool.pts[r, i, 1], pool.heading[r, i], v
    sim.s[0], sim.seg[0] = i * pool.spacing[r], i
    return pool.pts[r, i], pool.heading[r, i]


@pytest.mark.parametrize("kind", list(FACTORS))
def test_each_infraction_ends_the_route_and_costs_its_factor(small_world, monkeypatch, kind):
    route, k = find_entry(small_world[1], CONTROL_STOP) if kind == "stop_sign" else (0, 0)
    env, sim = _env(small_world, monkeypatch, route=route, n_npcs=1)
    pool = sim.pool
    if kind == "collision_pedestrian":
        p, h = _on_route(sim, 60.0, v=3.0)
        sim.px[0, 0], sim.py[0, 0], sim.pv[0, 0], sim.p_walk[0, 0] = p[0] + 2.6 * np.cos(h), p[1] + 2.6 * np.sin(h), 0.0, True
    elif kind == "collision_vehicle":
        lane = pool.point_lane[0, 60]
        sim.n_lane[0, 0], sim.n_s[0, 0], sim.n_v[0, 0] = lane, pool.point_lane_s[0, 60] + 3.5, 0.0
        sim.n_next[0, 0] = sim.map.lane_succ[lane, 0]
        _on_route(sim, 60.0, v=3.0)
    elif kind == "collision_static":
        p, h = _on_route(sim, 60.0, v=3.0)
        sim.ox[0, 0], sim.oy[0, 0], sim.oyaw[0, 0] = p[0] + 4.0 * np.cos(h), p[1] + 4.0 * np.sin(h), h
        sim.olen[0, 0], sim.owid[0, 0] = 4.5, 2.0
    elif kind == "red_light":
        s_stop, light = first_lit_stop(pool)
        _on_route(sim, s_stop - 0.6, v=16.0)
        force_light(sim, light, LIGHT_RED)
    else:
        _on_route(sim, pool.stop_s[route, k] - 0.6, v=16.0)
    s0 = sim.s[0]
    _, _, term, trunc, infos = env.step(np.zeros((1, 2), np.float32))
    assert infos[kind][0] and term[0] and not trunc[0]
    others = [k for k in FACTORS if k != kind]
    assert not any(infos[k][0] for k in others)
    rc = infos["route_completion"][0]
    assert rc == pytest.approx(sim.s[0] / pool.length[route]) and sim.s[0] >= s0
    assert infos["driving_score"][0] == pytest.approx(rc * FACTORS[kind])


def test_a_stop_in_the_zone_then_crossing_is_no_infraction(small_world, monkeypatch):
    route, k = find_entry(small_world[1], CONTROL_STOP)
    env, sim = _env(small_world, monkeypatch, route=route, n_npcs=1)
    line = sim.pool.stop_s[route, k]
    _on_route(sim, line - 2.25 - 3.0, v=0.0)  # front bumper 3 m before the line, standing
    env.step(np.array([[0.0, -1.0]], np.float32))
    assert sim.stop_done[0]
    _on_route(sim, line - 0.6, v=16.0)
    _, _, term, _, infos = env.step(np.zeros((1, 2), np.float32))
    assert not infos["stop_sign"][0] and not term[0]
    assert not sim.stop_done[0]  # used up at the line
    # Standing 10 m before the line (behind a queue, say) is not the stop.
    sim.reset_envs(np.array([0]), np.random.default_rng(1), routes=np.array([route]))
    _on_route(sim, line - 2.25 - 10.0, v=0.0)
    sim.step(np.array([[0.0, -1.0]], np.float32))
    assert not sim.stop_done[0]


# ---------------------------------------------------------------- traffic behaviour


@pytest.fixture(scope="module")
def rules_world():
    """A 4 x 4 town with signalled (some with permissive left turns), stop and priority junctions."""
    return world_from_map(generate_town(5, TownConfig(nx=4, ny=4)), 4, seed=0)


def _sim(world, n_npcs, **overrides):
    cfg = SimConfig(**{"n_towns": 1, "n_npcs": n_npcs, "n_pedestrians": 0, "random_light_offsets": False, **overrides})
    sim = DrivingSim(1, cfg, world=world)
    sim.reset_envs(np.array([0]), np.random.default_rng(0), routes=np.array([0]))
    sim.x[0], sim.y[0], sim.v[0] = -1e4, -1e4, 0.0  # the ego out of the way
    return sim


def _place(sim, k, lane, s, v, nxt=None):
    m = sim.map
    sim.n_lane[0, k], sim.n_s[0, k], sim.n_v[0, k], sim.n_off[0, k] = lane, s, v, 0.0
    sim.n_next[0, k] = m.lane_succ[lane, 0] if nxt is None else nxt
    x, y, h = m.lane_pose(sim.n_lane, sim.n_s)
    sim.nx, sim.ny, sim.nyaw = x, y, h


def _pred(m, conn):
    return int(np.flatnonzero((m.lane_succ == conn).any(1))[0])


def _no_overlap(sim, a, b):
    return not boxes_overlap(sim.nx[0, a], sim.ny[0, a], sim.nyaw[0, a], 4.5, 2.0, sim.nx[0, b], sim.ny[0, b],
                             sim.nyaw[0, b], 4.5, 2.0)


def _foe_pair(m, control=None, light_state=None):
    """(connector, foe it yields to) with the given control of the first, or None."""
    for c in np.flatnonzero(m.lane_kind == CONNECTOR_LANE):
        if control is not None and m.lane_control[c] != control:
            continue
        if light_state is not None and (m.lane_light[c] < 0 or light_state not in m.light_phase_state[m.lane_light[c]]):
            continue
        for f, y in zip(m.lane_foe[c], m.lane_yields[c]):
            if f >= 0 and y and m.lane_control[f] in (0, 1):
                return int(c), int(f)
    raise AssertionError("no such connector")


def test_traffic_stops_at_a_stop_sign_and_yields_to_the_priority_road(rules_world):
    m = rules_world[0]
    c, f = _foe_pair(m, control=CONTROL_STOP)
    sim = _sim(rules_world, 2)
    la, lb = _pred(m, c), _pred(m, f)
    _place(sim, 0, la, m.lane_length[la] - 25.0, 8.0, nxt=c)  # minor road, stop sign ahead
    _place(sim, 1, lb, 1.0, 0.0, nxt=f)  # priority road, starting far back
    min_v_at_line, entered_at, b_passed_at = np.inf, None, None
    for step in range(600):
        sim.step(np.zeros((1, 2)))
        rem = m.lane_length[la] - sim.n_s[0, 0] - 2.25
        if sim.n_lane[0, 0] == la and rem < 4.0:
            min_v_at_line = min(min_v_at_line, sim.n_v[0, 0])
        if entered_at is None and sim.n_lane[0, 0] == c:
            entered_at = step
        if b_passed_at is None and sim.n_lane[0, 1] not in (lb, f):
            b_passed_at = step
        assert _no_overlap(sim, 0, 1), step
    assert min_v_at_line < 0.1  # a full stop at the line
    assert entered_at is not None and b_passed_at is not None
    # The priority vehicle took longer than the minor one's stop; the minor one waited for it.
    assert entered_at > b_passed_at - 25


def test_permissive_green_turns_after_oncoming_traffic(rules_world):
    m = rules_world[0]
    c, f = _foe_pair(m, light_state=LIGHT_GREEN_YIELD)
    la, lb = _pred(m, c), _pred(m, f)

    def run(with_foe: bool):
        sim = _sim(rules_world, 2)
        _place(sim, 0, la, m.lane_length[la] - 8.0, 0.0, nxt=c)
        _place(sim, 1, lb, m.lane_length[lb] - 45.0 if with_foe else 0.0, 9.0, nxt=f)
        if not with_foe:
            sim.n_lane[0, 1], sim.n_next[0, 1] = la, c  # parked behind, out of the way
            sim.n_s[0, 1] = 0.0
        entered = None
        for step in range(120):
            force_light(sim, m.lane_light[c], LIGHT_GREEN_YIELD)
            force_light(sim, m.lane_light[f], LIGHT_GREEN)
            sim.step(np.zeros((1, 2)))
            if entered is None and sim.n_lane[0, 0] == c:
                entered = step
            assert _no_overlap(sim, 0, 1), step
        return entered

    alone = run(False)
    assert alone is not None and alone < 40  # permissive green is a green, not a red
    with_foe = run(True)
    assert with_foe is None or with_foe > alone + 20  # it let the oncoming vehicle pass first


def test_traffic_waits_for_a_crossing_pedestrian(rules_world):
    m = rules_world[0]
    sim = _sim(rules_world, 1, n_pedestrians=1)
    # An unmarked crossing and the road lane through it.
    cidx = int(np.flatnonzero(~m.crossing_marked)[0])
    a, b = m.crossing_a[cidx], m.crossing_b[cidx]
    mid = (a + b) / 2
    road = np.flatnonzero(m.lane_kind == ROAD_LANE)
    d = [np.hypot(*(m.lane_points(ln) - mid).T).min() for ln in road]
    lane = int(road[np.argmin(d)])
    s_cross = float(np.argmin(np.hypot(*(m.lane_points(lane) - mid).T)) * m.lane_spacing[lane])
    _place(sim, 0, lane, max(s_cross - 30.0, 0.0), 8.0)
    # The pedestrian steps off the kerb on the lane's side.
    sim.p_cross[0, 0], sim.p_active[0, 0], sim.p_walk[0, 0], sim.p_u[0, 0], sim.p_lat[0, 0] = cidx, True, True, 0.0, 0.0
    x0, y0, _ = m.lane_pose(np.array([lane]), np.array([s_cross]))
    near_a = np.hypot(a[0] - x0[0], a[1] - y0[0]) < np.hypot(b[0] - x0[0], b[1] - y0[0])
    sim.p_dir[0, 0], sim.p_speed[0, 0] = (1.0 if near_a else -1.0), 1.2
    sim._place_pedestrians()
    min_gap, min_v = np.inf, np.inf
    for step in range(150):
        sim.step(np.zeros((1, 2)))
        gap = np.hypot(sim.nx[0, 0] - sim.px[0, 0], sim.ny[0, 0] - sim.py[0, 0])
        min_gap, min_v = min(min_gap, gap), min(min_v, sim.n_v[0, 0])
    assert min_v < 1.0  # it braked for the pedestrian ...
    assert min_gap > 2.25 + 0.3  # ... never touching them
    assert sim.n_s[0, 0] > s_cross or sim.n_lane[0, 0] != lane  # and drove on after they crossed


def test_traffic_passes_an_obstacle_by_shifting_inside_its_lane(rules_world):
    m = rules_world[0]
    o = int(np.flatnonzero(m.obstacle_lane >= 0)[0])
    lane = int(m.obstacle_lane[o])
    sim = _sim(rules_world, 1)
    _place(sim, 0, lane, max(m.obstacle_s0[o] - 30.0, 0.0), 8.0)
    shifts = []
    for _ in range(120):
        sim.step(np.zeros((1, 2)))
        hit = boxes_overlap(sim.nx[0, 0], sim.ny[0, 0], sim.nyaw[0, 0], 4.5, 2.0, m.obstacle_xy[o, 0], m.obstacle_xy[o, 1],
                            m.obstacle_yaw[o], m.obstacle_length[o], m.obstacle_width[o])
        assert not hit
        if sim.n_lane[0, 0] == lane and m.obstacle_s0[o] <= sim.n_s[0, 0] <= m.obstacle_s1[o]:
            shifts.append(sim.n_off[0, 0])
    need = m.obstacle_edge[o] + sim.cfg.obstacle_clearance + 1.0
    assert shifts and min(shifts) == pytest.approx(need, abs=0.05)
    assert sim.n_lane[0, 0] != lane and abs(sim.n_off[0, 0]) < 0.05  # past it and back on the centre line


def test_traffic_changes_lanes_when_there_is_room(rules_world):
    m = rules_world[0]
    two = [ln for ln in np.flatnonzero(m.lane_kind == ROAD_LANE)
           if m.lane_left[ln] >= 0 and m.lane_length[ln] > 50 and m.lane_obstacle[ln] < 0 and m.lane_obstacle[m.lane_left[ln]] < 0]
    lane = int(two[0])
    sim = _sim(rules_world, 1, lane_change_rate=100.0)
    sim.n_lc_wait[:] = 0.0
    _place(sim, 0, lane, 11.0, 8.0)
    offs = []
    for _ in range(40):
        sim.step(np.zeros((1, 2)))
        offs.append(sim.n_off[0, 0])
    assert sim.n_lane[0, 0] == m.lane_left[lane] or sim.n_lane[0, 0] in m.lane_succ[m.lane_left[lane]]
    assert min(offs) == pytest.approx(-3.5, abs=0.2)  # started beside its new lane ...
    assert abs(offs[-1]) < 0.05  # ... and moved onto it
    assert np.all(np.diff(offs[1:]) <= sim.cfg.lateral_speed * sim.cfg.dt + 1e-9)
