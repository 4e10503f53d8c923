"""Towns, lane graph, A* routes."""

import numpy as np
import pytest

from steer.driving.roadmap import (
    CONNECTOR_LANE, CONTROL_LIGHT, CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, LIGHT_GREEN, LIGHT_GREEN_YIELD,
    ROAD_LANE,
)
from steer.driving.routes import astar_lanes
from steer.driving.town import CROSSWALK_ROOM, TownConfig, generate_town, town_specs


def test_town_is_deterministic_and_connected():
    a, b = generate_town(11), generate_town(11)
    assert np.array_equal(a.pts, b.pts) and np.array_equal(a.lane_succ, b.lane_succ)
    assert not np.array_equal(a.pts.shape, generate_town(12).pts.shape) or not np.allclose(a.pts, generate_town(12).pts)
    for ln in range(a.n_lanes):
        assert a.lane_succ_count[ln] >= 1
        end = a.lane_points(ln)[-1]
        for s in a.lane_succ[ln, : a.lane_succ_count[ln]]:
            assert np.linalg.norm(a.lane_points(s)[0] - end) < 1e-6
    # every road lane reaches every other road lane
    road = np.flatnonzero(a.lane_kind == ROAD_LANE)
    assert all(astar_lanes(a, int(road[0]), int(g)) is not None for g in road)


def test_lights_only_on_connectors_and_drivable_area():
    m = generate_town(5, TownConfig(nx=4, ny=4))
    lit = np.flatnonzero(m.lane_light >= 0)
    assert len(lit) > 0 and np.all(m.lane_kind[lit] == CONNECTOR_LANE)
    # lane centres are inside the drivable area, by at least a third of a lane width
    town = np.zeros(len(m.pts), np.int64)
    assert np.all(m.signed_distance(town, m.pts[:, 0], m.pts[:, 1]) < -1.0)
    # Lights never let conflicting traffic go together: two connectors that are both on protected
    # green never conflict, and a permissive green ("g") yields to every conflicting green.
    foes = {(a, int(f)): bool(y) for a in range(m.n_lanes) for f, y in zip(m.lane_foe[a], m.lane_yields[a]) if f >= 0}
    assert len(foes) > 0 and (m.light_phase_state == LIGHT_GREEN_YIELD).any()
    for g in range(m.n_groups):
        lights = np.flatnonzero(m.light_group == g)
        conns = np.flatnonzero(np.isin(m.lane_light, lights))
        for t in np.arange(0.0, m.light_cycle[lights[0]], 0.5):
            st = m.light_state(m.lane_light[conns], np.full(len(conns), t), np.zeros(len(conns)))
            for a, sa in zip(conns, st):
                for b, sb in zip(conns, st):
                    if (a, b) in foes and sa == LIGHT_GREEN:
                        assert sb not in (LIGHT_GREEN, LIGHT_GREEN_YIELD) or (sb == LIGHT_GREEN_YIELD and foes[(b, a)])


def test_junction_controls_and_right_of_way():
    m = generate_town(5, TownConfig(nx=4, ny=4))
    conn = m.lane_kind == CONNECTOR_LANE
    controls = set(np.unique(m.lane_control[conn]))
    # a mix: signalled, stop and priority junctions (yield signs on the minor roads)
    assert {CONTROL_LIGHT, CONTROL_STOP, CONTROL_YIELD, CONTROL_NONE} <= controls
    for a in np.flatnonzero(conn):
        for f, y in zip(m.lane_foe[a], m.lane_yields[a]):
            if f < 0:
                continue
            # conflicts are symmetric and exactly one of a pair yields
            back = list(m.lane_foe[f]).index(a)
            assert m.lane_yields[f, back] != y
            # a stop- or yield-controlled approach yields to the priority road's connectors
            if m.lane_control[a] in (CONTROL_STOP, CONTROL_YIELD) and m.lane_control[f] == CONTROL_NONE:
                assert y
    # crossings lie across roads: their ends are beside the road, their middle on it
    assert len(m.crossing_a) > 0 and m.crossing_marked.any() and not m.crossing_marked.all()
    town = np.zeros(len(m.crossing_a), np.int64)
    mid = (m.crossing_a + m.crossing_b) / 2
    assert (m.signed_distance(town, mid[:, 0], mid[:, 1]) < 0).all()
    # obstacles stand partly in a lane: a 2 m wide car on the lane's centre line would touch them
    assert len(m.obstacle_xy) > 0 and (m.obstacle_lane >= 0).all()
    assert (np.abs(m.obstacle_edge) < 1.0).all() and (m.obstacle_s1 > m.obstacle_s0).all()
    assert all(m.lane_obstacle[ln] == o for o, ln in enumerate(m.obstacle_lane))


def test_astar_route_is_connected(small_world):
    m, pool = small_world
    for r in pool.routes:
        for a, b in zip(r.lanes[:-1], r.lanes[1:]):
            assert b in m.lane_succ[a] or b in (m.lane_left[a], m.lane_right[a])
        step = np.linalg.norm(np.diff(r.points, axis=0), axis=1)
        assert step.max() <= 1.0 + 1e-9 and step.min() > 0.3
        assert np.all(np.diff(r.stop_s) > 0)
        # every stop is where the route enters a lit connector
        for s, light in zip(r.stop_s, r.stop_light):
            i = int(round(s / (r.s[1] - r.s[0])))
            assert m.lane_light[r.point_lane[min(i + 1, len(r.s) - 1)]] == light


def _halves(seed: int, cfg: TownConfig):
    """Each junction's half-size, with the town's crossings and junction polygons."""
    _, _, polys, crossings, _ = town_specs(seed, cfg)
    return np.array([np.abs(p - p.mean(0)).max() for p in polys]), crossings, polys


def test_junction_sizes_are_drawn_per_junction_and_keep_the_layout():
    fixed = TownConfig(nx=4, ny=4, junction_margin_min=None)
    drawn = TownConfig(nx=4, ny=4, junction_margin=5.0, junction_margin_min=1.0)
    h_fixed, _, p_fixed = _halves(7, fixed)
    h_drawn, crossings, p_drawn = _halves(7, drawn)
    # the same junction centres and roads: a junction's half-size is its widest road plus its margin
    assert np.allclose([p.mean(0) for p in p_fixed], [p.mean(0) for p in p_drawn])
    m_drawn = h_drawn - h_fixed + 5.0
    assert (m_drawn >= 1.0 - 1e-6).all() and (m_drawn <= 5.0 + 1e-6).all() and np.ptp(m_drawn) > 2.0
    # marked crosswalks only where there is room for one between the stop line and the crossing road
    marked = [c for c in crossings if c.marked]
    assert marked
    for c in marked:
        mid = (c.a + c.b) / 2
        j = int(np.argmin([np.linalg.norm(mid - p.mean(0)) for p in p_drawn]))
        assert m_drawn[j] >= CROSSWALK_ROOM
    with pytest.raises(ValueError, match="junction_margin_min"):
        town_specs(7, TownConfig(junction_margin=2.0, junction_margin_min=3.0))


def test_green_times_are_drawn_per_junction():
    def greens(cfg):
        lights = town_specs(5, cfg)[1]
        return np.array([d for lt in lights for d, s in zip(lt.durations, lt.states)
                         if s in (LIGHT_GREEN, LIGHT_GREEN_YIELD)])

    g = greens(TownConfig(nx=4, ny=4, green_s=8.0, green_s_max=30.0))
    assert (g >= 8.0 - 1e-6).all() and (g <= 30.0 + 1e-6).all() and np.ptp(g) > 3.0
    assert np.allclose(greens(TownConfig(nx=4, ny=4)), 8.0)
