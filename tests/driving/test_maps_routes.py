"""Towns, lane graph, A* routes."""

import numpy as np

from steer.driving.roadmap import CONNECTOR_LANE, ROAD_LANE
from steer.driving.routes import astar_lanes
from steer.driving.town import TownConfig, generate_town


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
    m = generate_town(3, TownConfig(nx=3, ny=3, drop_road_prob=0.0))
    lit = np.flatnonzero(m.lane_light >= 0)
    assert len(lit) > 0 and np.all(m.lane_kind[lit] == CONNECTOR_LANE)
    # lane centres are inside the drivable area, by at least a third of a lane width
    town = np.zeros(len(m.pts), np.int64)
    assert np.all(m.signed_distance(town, m.pts[:, 0], m.pts[:, 1]) < -1.0)
    # each junction of degree 4 serves its four approaches one after the other: one green at a time
    for g in range(m.n_groups):
        lights = np.flatnonzero(m.light_group == g)
        for t in np.arange(0.0, m.light_cycle[lights[0]], 0.5):
            st = m.light_state(lights, np.full(len(lights), t), np.zeros(len(lights)))
            assert (st == 0).sum() <= 1


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
