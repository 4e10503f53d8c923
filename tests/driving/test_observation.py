"""The vector observation on hand-built scenes: the numbers a driver reads must be where the world is."""

import numpy as np
import pytest

from steer.driving.observation import JUNCTION_FIELDS, ROAD_USER_KINDS, USER_FIELDS, VectorObservation
from steer.driving.roadmap import CONTROL_STOP, LIGHT_GREEN, LIGHT_RED
from tests.driving.conftest import find_entry, first_lit_stop, make_sim


def _named(obs_row, names):
    return dict(zip(names, obs_row))


def _place_ego_on_route(sim, s: float, lateral_left: float = 0.0, yaw_offset: float = 0.0, v: float = 0.0):
    """Put env 0's ego at arc length s of its route (and ``lateral_left`` metres to the left of it)."""
    r = sim.route[0]
    i = int(s / sim.pool.spacing[r])
    h = sim.pool.heading[r, i]
    sim.x[0] = sim.pool.pts[r, i, 0] - np.sin(h) * lateral_left
    sim.y[0] = sim.pool.pts[r, i, 1] + np.cos(h) * lateral_left
    sim.yaw[0], sim.v[0], sim.s[0], sim.seg[0] = h + yaw_offset, v, i * sim.pool.spacing[r], i
    return h


def _park_traffic_far(sim):
    sim.nx[:], sim.ny[:] = 1e4, 1e4
    sim.px[:], sim.py[:], sim.ox[:], sim.oy[:] = 1e4, 1e4, 1e4, 1e4


def test_ego_route_goal_and_map_fields(small_world):
    sim = make_sim(small_world, 1)
    ob = VectorObservation(sim)
    names = ob.field_names()
    assert len(names) == ob.size == len(set(names))
    _park_traffic_far(sim)
    _place_ego_on_route(sim, 60.0, lateral_left=1.0, v=5.0)
    o = _named(ob()[0], names)
    assert o["ego.speed"] == pytest.approx(0.5)
    assert o["ego.speed_limit"] == pytest.approx(sim.pool.speed_limit[0, 60] / 10.0)
    # The route's nearest point is 1 m to the right of an ego that faces along it.
    assert o["route.x0"] == pytest.approx(0.0, abs=0.02) and o["route.y0"] == pytest.approx(-1.0 / 20.0, abs=0.005)
    # Points ahead are ahead and as far as their arc length (a straight or gently curved road here).
    d = np.hypot(o["route.x5"], o["route.y5"]) * 20.0
    assert o["route.x5"] > 0 and 8.5 < d < 10.5  # route_ahead_m[5] = 10 m
    assert o["goal.distance"] == pytest.approx((sim.pool.length[0] - sim.s[0]) / 100.0)
    assert o["route.lane_width"] == pytest.approx(3.5 / 4.0)
    # On the road: the ego's own cell is inside the drivable area and on a route carriageway.
    centre = ob.cfg.map_forward_m.index(0.0) * len(ob.cfg.map_left_m) + ob.cfg.map_left_m.index(0.0)
    assert o[f"map.sdf{centre}"] < 0 and o[f"map.route{centre}"] == 1.0
    # Turned around by 180 degrees, the route ahead lies behind the ego.
    _place_ego_on_route(sim, 60.0, yaw_offset=np.pi)
    assert _named(ob()[0], names)["route.x5"] < -0.4
    # Far off the map: everything outside, nothing on the route.
    sim.x[0], sim.y[0] = -1e4, -1e4
    o = ob()[0]
    g = len(ob.cfg.map_forward_m) * len(ob.cfg.map_left_m)
    np.testing.assert_allclose(o[ob.slices["map"]][:g], 1.0)
    np.testing.assert_allclose(o[ob.slices["map"]][g:], 0.0)


def test_road_user_slots_are_nearest_first_in_the_ego_frame(small_world):
    sim = make_sim(small_world, 1)
    ob = VectorObservation(sim)
    _park_traffic_far(sim)
    h = _place_ego_on_route(sim, 60.0)
    c, s = np.cos(h), np.sin(h)
    # Vehicle 2: 10 m ahead, 2 m to the left, heading the same way at 5 m/s.
    sim.nx[0, 2], sim.ny[0, 2] = sim.x[0] + 10 * c - 2 * s, sim.y[0] + 10 * s + 2 * c
    sim.nyaw[0, 2], sim.n_v[0, 2] = h, 5.0
    # Vehicle 4: 6 m behind, oncoming (heading turned by 180 degrees) at 3 m/s.
    sim.nx[0, 4], sim.ny[0, 4] = sim.x[0] - 6 * c, sim.y[0] - 6 * s
    sim.nyaw[0, 4], sim.n_v[0, 4] = h + np.pi, 3.0
    slots = ob()[0, ob.slices["users"]].reshape(ob.cfg.max_users, len(USER_FIELDS))
    first, second = (dict(zip(USER_FIELDS, row)) for row in slots[:2])
    assert first["present"] == 1 and first["x"] == pytest.approx(-6 / 20) and first["y"] == pytest.approx(0, abs=1e-6)
    assert first["cos"] == pytest.approx(-1) and first["vx"] == pytest.approx(-0.3)
    assert second["present"] == 1 and second["x"] == pytest.approx(0.5) and second["y"] == pytest.approx(0.1)
    assert second["cos"] == pytest.approx(1) and second["vx"] == pytest.approx(0.5) and second["vy"] == pytest.approx(0)
    assert second["length"] == pytest.approx(4.5 / 5) and second["is_vehicle"] == 1
    assert sum(second[f"is_{k}"] for k in ROAD_USER_KINDS) == 1
    np.testing.assert_array_equal(slots[2:], 0.0)  # the others are beyond the radius: absent and zero


def test_next_light_state_and_distance(small_world):
    sim = make_sim(small_world, 1)
    ob = VectorObservation(sim)
    names = ob.field_names()
    pool, m = sim.pool, sim.map
    stop, light = first_lit_stop(pool)
    _park_traffic_far(sim)
    _place_ego_on_route(sim, stop - 20.0)
    offset = sim.group_offset[0, m.light_group[light]]
    for want, key, clear in ((LIGHT_RED, "junction.red", 0), (LIGHT_GREEN, "junction.green", 1)):
        t = next(t for t in np.arange(0.0, 60.0, 0.5) if m.light_state(np.array([light]), np.array([t]),
                                                                        np.array([offset]))[0] == want)
        sim.t[0] = t
        o = _named(ob()[0], names)
        assert o[key] == 1 and sum(o[f"junction.{k}"] for k in JUNCTION_FIELDS[1:7]) == 1
        assert o["junction.distance"] == pytest.approx((stop - sim.s[0] - 4.5 / 2) / 50.0)
        assert o["junction.clear"] == clear
    # Past the route's last junction entry: none.
    _place_ego_on_route(sim, pool.stop_s[0][np.isfinite(pool.stop_s[0])].max() + 5.0)
    o = _named(ob()[0], names)
    assert o["junction.none"] == 1 and o["junction.distance"] == 2.0 and o["junction.clear"] == 1


def test_stop_sign_needs_the_stop_before_it_is_clear(small_world):
    route, k = find_entry(small_world[1], CONTROL_STOP)
    sim = make_sim(small_world, 1, route=route)
    ob = VectorObservation(sim)
    names = ob.field_names()
    pool = sim.pool
    _park_traffic_far(sim)
    _place_ego_on_route(sim, pool.stop_s[route, k] - 3.5)
    o = _named(ob()[0], names)
    assert o["junction.stop"] == 1 and o["junction.none"] == 0 and o["junction.clear"] == 0
    assert o["junction.distance"] == pytest.approx(1.25 / 50.0, abs=0.02)
    sim.step(np.array([[0.0, -1.0]], np.float32))  # standing: the stop counts
    assert sim.stop_done[0]
    assert _named(ob()[0], names)["junction.clear"] == 1


def test_pedestrians_and_obstacles_fill_user_slots(small_world):
    sim = make_sim(small_world, 1)
    ob = VectorObservation(sim)
    _park_traffic_far(sim)
    sim.px[:], sim.py[:], sim.ox[:], sim.oy[:] = 1e4, 1e4, 1e4, 1e4
    h = _place_ego_on_route(sim, 60.0)
    c, s = np.cos(h), np.sin(h)
    # A pedestrian 8 m ahead walking to the left at 1.5 m/s, a parked car 15 m ahead 3 m to the right.
    sim.px[0, 1], sim.py[0, 1], sim.pyaw[0, 1], sim.pv[0, 1] = sim.x[0] + 8 * c, sim.y[0] + 8 * s, h + np.pi / 2, 1.5
    sim.ox[0, 0], sim.oy[0, 0], sim.oyaw[0, 0] = sim.x[0] + 15 * c + 3 * s, sim.y[0] + 15 * s - 3 * c, h
    sim.olen[0, 0], sim.owid[0, 0] = 4.5, 2.0
    slots = ob()[0, ob.slices["users"]].reshape(ob.cfg.max_users, len(USER_FIELDS))
    ped, car = (dict(zip(USER_FIELDS, row)) for row in slots[:2])
    assert ped["is_pedestrian"] == 1 and ped["is_vehicle"] == 0 and ped["x"] == pytest.approx(8 / 20)
    assert ped["vy"] == pytest.approx(0.15) and ped["vx"] == pytest.approx(0, abs=1e-6)
    assert ped["length"] == pytest.approx(sim.cfg.pedestrian_size / 5)
    assert car["is_obstacle"] == 1 and car["y"] == pytest.approx(-3 / 20) and car["vx"] == 0
    # In the route frame: the pedestrian is 8 m along, on the centre line, crossing to the left; the
    # parked car 15 m along and 3 m to the right, still.
    assert ped["along"] == pytest.approx(8 / 20, abs=0.06) and ped["across"] == pytest.approx(0.0, abs=0.1)
    assert ped["v_across"] == pytest.approx(0.15, abs=0.01) and ped["v_along"] == pytest.approx(0.0, abs=0.01)
    assert car["along"] == pytest.approx(15 / 20, abs=0.06) and car["across"] == pytest.approx(-3 / 4, abs=0.1)
    assert car["v_along"] == 0 and car["v_across"] == 0
    # The parked car (2 m wide, along the route) leaves 3 - 1 = 2 m to the centre line; the pedestrian
    # (0.6 m square) covers it.
    assert car["gap"] == pytest.approx(2 / 4, abs=0.1) and ped["gap"] < 0
    np.testing.assert_array_equal(slots[2:], 0.0)


def test_route_frame_follows_a_curved_route(small_world):
    """A user standing on the route 30 m further along is on the centre line in the route frame, even
    where the route turns and the ego frame puts it off to the side."""
    sim = make_sim(small_world, 1)
    ob = VectorObservation(sim)
    _park_traffic_far(sim)
    r = sim.route[0]
    sp, n, head = sim.pool.spacing[r], sim.pool.n[r], sim.pool.heading[r]
    turn = np.abs(np.angle(np.exp(1j * (head[30:n - 1] - head[: n - 31]))))  # heading change over ~30 m
    i0 = int(np.argmax(turn))
    assert turn[i0] > 0.5, "the test world's route should turn somewhere"
    _place_ego_on_route(sim, i0 * sp)
    j = i0 + int(round(30 / sp))
    h = head[j]
    # A pedestrian on the route point, and a vehicle 2 m to its left driving along the route at 5 m/s.
    sim.px[0, 0], sim.py[0, 0], sim.pyaw[0, 0], sim.pv[0, 0] = sim.pool.pts[r, j, 0], sim.pool.pts[r, j, 1], h, 0.0
    sim.nx[0, 0], sim.ny[0, 0] = sim.pool.pts[r, j, 0] - 2 * np.sin(h), sim.pool.pts[r, j, 1] + 2 * np.cos(h)
    sim.nyaw[0, 0], sim.n_v[0, 0] = h, 5.0
    slots = ob()[0, ob.slices["users"]].reshape(ob.cfg.max_users, len(USER_FIELDS))
    rows = [dict(zip(USER_FIELDS, row)) for row in slots if row[0] == 1]
    ped = next(u for u in rows if u["is_pedestrian"] == 1)
    car = next(u for u in rows if u["is_vehicle"] == 1)
    assert abs(ped["y"]) * 20 > 3.0  # off to the side in the ego frame
    assert ped["along"] == pytest.approx((j - i0) * sp / 20, abs=0.06)
    assert ped["across"] == pytest.approx(0.0, abs=0.1)
    assert car["across"] == pytest.approx(2 / 4, abs=0.1)
    assert car["v_along"] == pytest.approx(0.5, abs=0.01) and car["v_across"] == pytest.approx(0.0, abs=0.01)


def test_all_envs_at_once_equal_one_by_one(small_world):
    sim = make_sim(small_world, 6)
    rng = np.random.default_rng(0)
    for _ in range(30):
        sim.step(rng.uniform(-0.3, 1.0, (6, 2)))
    ob = VectorObservation(sim)
    full = ob()
    assert np.isfinite(full).all() and np.abs(full).max() <= 10.0  # inside the Box bounds of the env's space
    for e in range(6):
        np.testing.assert_array_equal(ob(np.array([e]))[0], full[e])


def test_route_frame_span_must_reach_ahead():
    import dataclasses

    from steer.driving.env import DriveConfigError, DriveEnvConfig, DriveVectorEnv
    from steer.driving.observation import VectorObsConfig

    for bad in ((10.0, 72.0), (-8.0, -1.0), (-8.0,)):
        with pytest.raises(DriveConfigError, match="route-frame-m"):
            DriveVectorEnv(1, dataclasses.replace(DriveEnvConfig(), vector=VectorObsConfig(route_frame_m=bad)))
