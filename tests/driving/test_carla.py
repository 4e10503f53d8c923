"""CARLA: coordinate conversion, OpenDRIVE export parsed by carla.Map, our route planner and the reward on it."""

import socket
from types import SimpleNamespace

import numpy as np
import pytest

from steer.driving.carla_coords import from_carla, to_carla
from steer.driving.rewards import RewardState, carl_reward
from steer.driving.routes import astar_lanes, build_route, make_pool, project_on_routes
from steer.driving.roadmap import build_roadmap
from steer.driving.town import TownConfig, town_specs


def test_coordinate_round_trip_and_handedness():
    x, y, yaw = np.array([3.0, -7.5]), np.array([2.0, 10.0]), np.array([0.3, -2.9])
    cx, cy, cyaw = to_carla(x, y, yaw)
    assert np.allclose(cy, -y) and np.allclose(cyaw, -np.degrees(yaw))
    bx, by, byaw = from_carla(cx, cy, cyaw)
    assert np.allclose(bx, x) and np.allclose(by, y) and np.allclose(byaw, yaw)
    # our north (yaw +90 deg, counter-clockwise) is CARLA's yaw -90 (clockwise positive, y flipped)
    assert np.isclose(to_carla(0.0, 0.0, np.pi / 2)[2], -90.0)
    assert np.isclose(from_carla(0.0, 0.0, 270.0)[2], np.pi / 2)


carla = pytest.importorskip("carla", reason="the carla client wheel is not installed (driving extra, Python 3.11)")


@pytest.fixture(scope="module")
def town_and_carla_map():
    from steer.driving.opendrive import export_opendrive

    lanes, lights, polys, _, _ = town_specs(21, TownConfig(nx=3, ny=3, lane_choices=(1, 2), drop_road_prob=0.0))
    m = build_roadmap(lanes, lights, polys)
    return m, carla.Map("steer_town", export_opendrive(lanes))


def test_exported_town_parses_with_lane_centres(town_and_carla_map):
    m, cmap = town_and_carla_map
    rng = np.random.default_rng(0)
    for i in rng.choice(len(m.pts), 50, replace=False):
        x, y = m.pts[i]
        cx, cy, _ = to_carla(x, y, 0.0)
        wp = cmap.get_waypoint(carla.Location(float(cx), float(cy), 0.0))
        bx, by, byaw = from_carla(wp.transform.location.x, wp.transform.location.y, wp.transform.rotation.yaw)
        assert np.hypot(bx - x, by - y) < 0.6
    assert len(cmap.get_topology()) >= int((m.lane_kind == 0).sum())


def test_planner_on_carla_map_matches_our_route_and_earns_full_reward(town_and_carla_map):
    from steer.driving.carla_backend import CarlaRoutePlanner

    m, cmap = town_and_carla_map
    planner = CarlaRoutePlanner(cmap, resolution=1.0)
    rng = np.random.default_rng(3)
    road = np.flatnonzero(m.lane_kind == 0)
    checked = 0
    while checked < 3:
        a, b = rng.choice(road, 2, replace=False)
        seq = astar_lanes(m, int(a), int(b), lane_change_cost=1e6)  # no lane changes: CARLA lanes are roads here
        if seq is None or any(y in (m.lane_left[x], m.lane_right[x]) for x, y in zip(seq[:-1], seq[1:])):
            continue
        ours = build_route(m, seq, 5.0, m.lane_length[b] - 5.0)
        pts = planner.plan(ours.points[0], ours.points[-1])
        # Same path: every CARLA route point is on our route and the lengths agree.
        d = np.min(np.hypot(pts[:, None, 0] - ours.points[None, :, 0], pts[:, None, 1] - ours.points[None, :, 1]), 1)
        assert d.max() < 0.75
        length = np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()
        assert abs(length - ours.length) < 0.03 * ours.length
        # Driving along the CARLA route earns the whole CaRL progress (100 %) on our route.
        pool = make_pool(m, [ours], [0])
        s = np.zeros(1)
        total = 0.0
        for p in pts[1:]:
            s_new, lat, _ = project_on_routes(pool, np.zeros(1, np.int64), s, p[:1], p[1:])
            st = RewardState(100 * (s_new - s) / ours.length, np.zeros(1, bool), np.full(1, 5.0), np.full(1, 8.0),
                             np.zeros(1, bool), np.zeros(1), lat, np.full(1, 3.5), np.zeros(1), np.zeros(1),
                             np.full(1, np.inf), np.full(1, np.inf), np.zeros(1, bool), np.zeros(1, bool))
            total += carl_reward(st)[0]
            s = s_new
        assert total > 97.0
        checked += 1


class _FakeWorld:
    def __init__(self):
        self.settings = SimpleNamespace(synchronous_mode=False, fixed_delta_seconds=None, no_rendering_mode=False)
        self.applied = []

    def get_settings(self):
        return SimpleNamespace(**vars(self.settings))

    def apply_settings(self, s):
        self.applied.append(SimpleNamespace(**vars(s)))
        self.settings = s


def test_backend_sets_synchronous_mode_and_restores_settings():
    from steer.driving.carla_backend import CarlaBackend, CarlaConfig

    world = _FakeWorld()
    client = SimpleNamespace(set_timeout=lambda t: None, get_world=lambda: world)
    be = CarlaBackend(CarlaConfig(), client=client)
    s = world.applied[-1]
    assert s.synchronous_mode and s.no_rendering_mode and s.fixed_delta_seconds == 0.1
    be.close()
    assert not world.settings.synchronous_mode and world.settings.fixed_delta_seconds is None


def _carla_server():
    from steer.driving.carla_backend import carla_host_from_env

    hp = carla_host_from_env()
    if hp is None:
        return None
    try:
        socket.create_connection(hp, timeout=2).close()
    except OSError:
        return None
    return hp


@pytest.mark.skipif(_carla_server() is None, reason="no CARLA server: set CARLA_HOST=host[:port] to a running server")
def test_server_drives_and_tears_down(town_and_carla_map):
    from steer.driving.carla_backend import CarlaBackend, CarlaConfig
    from steer.driving.opendrive import export_opendrive

    host, port = _carla_server()
    m, _ = town_and_carla_map
    lanes, *_ = town_specs(21, TownConfig(nx=3, ny=3, lane_choices=(1, 2), drop_road_prob=0.0))
    be = CarlaBackend(CarlaConfig(host=host, port=port))
    try:
        be.load_opendrive(export_opendrive(lanes))
        x, y = m.pts[m.lane_offset[0] + 5]
        be.reset(x, y, m.pt_heading[m.lane_offset[0] + 5])
        for _ in range(20):
            out = be.step([0.0, 0.5])
        assert out["speed"] > 0.5 and not out["collision"]
    finally:
        be.close()
    assert be.ego is None
