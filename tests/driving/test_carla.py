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


# ---------------------------------------------------------------------------------------------
# The server side, faked: only what a CARLA server would do is stood in for (physics of the ego,
# autopilot traffic on the server's own waypoints, a traffic light, the collision sensor). The map
# is a real carla.Map parsed from OpenDRIVE, and everything on our side runs unchanged.


class _Actor:
    _next_id = 1

    def __init__(self, world, type_id, transform, parent=None):
        self.world, self.type_id, self.parent = world, type_id, parent
        self.id = _Actor._next_id
        _Actor._next_id += 1
        self.x, self.y, self.yaw = transform.location.x, transform.location.y, transform.rotation.yaw  # CARLA frame
        self.speed, self.control, self.autopilot, self.callback, self.alive = 0.0, None, False, None, True
        self.bounding_box = SimpleNamespace(extent=carla.Vector3D(2.25, 1.0, 0.75))

    def get_transform(self):
        return carla.Transform(carla.Location(self.x, self.y, 0.0), carla.Rotation(yaw=self.yaw))

    def get_velocity(self):
        r = np.radians(self.yaw)
        return carla.Vector3D(self.speed * np.cos(r), self.speed * np.sin(r), 0.0)

    def apply_control(self, control):
        self.control = control

    def set_autopilot(self, on=True, *args):
        self.autopilot = on

    def listen(self, callback):
        self.callback = callback

    def stop(self):
        self.callback = None

    def destroy(self):
        self.alive = False
        self.world.actors.remove(self)


class _Light:
    def __init__(self, world, green_from):
        self.world, self.green_from = world, green_from

    def get_state(self):
        return carla.TrafficLightState.Green if self.world.time >= self.green_from else carla.TrafficLightState.Red


class _Server:
    """A fake CARLA world: synchronous ticks, kinematic physics, autopilot along waypoints."""

    def __init__(self, xodr, green_from=1e9, wheelbase=2.9, max_steer=0.7):
        self.map = carla.Map("fake", xodr)
        self.settings = SimpleNamespace(synchronous_mode=False, fixed_delta_seconds=None, no_rendering_mode=False)
        self.actors, self.time, self.light = [], 0.0, _Light(self, green_from)
        self.wheelbase, self.max_steer = wheelbase, max_steer

    # client API
    def set_timeout(self, t):
        pass

    def get_world(self):
        return self

    # world API
    def get_settings(self):
        return SimpleNamespace(**vars(self.settings))

    def apply_settings(self, s):
        self.settings = SimpleNamespace(**vars(s))

    def get_map(self):
        return self.map

    def get_blueprint_library(self):
        return SimpleNamespace(filter=lambda pattern: [SimpleNamespace(id="vehicle.lincoln.mkz_2020")],
                               find=lambda name: SimpleNamespace(id=name))

    def spawn_actor(self, bp, transform, attach_to=None):
        a = _Actor(self, bp.id, transform, attach_to)
        self.actors.append(a)
        return a

    try_spawn_actor = spawn_actor

    def get_traffic_lights_from_waypoint(self, wp, distance):
        ahead = wp.next(distance)
        return [self.light] if any(w.is_junction for w in ahead) else []

    def tick(self):
        dt = self.settings.fixed_delta_seconds
        self.time += dt
        cars = [a for a in self.actors if a.parent is None]
        for a in cars:
            if a.autopilot:
                wp = self.map.get_waypoint(carla.Location(a.x, a.y, 0.0))
                a.speed = 4.0
                nxt = wp.next(a.speed * dt)
                if nxt:
                    t = nxt[0].transform
                    a.x, a.y, a.yaw = t.location.x, t.location.y, t.rotation.yaw
            elif a.control is not None:  # kinematic bicycle, CARLA frame: steer > 0 turns right (clockwise)
                c = a.control
                acc = 3.0 * c.throttle - 7.0 * c.brake
                v1 = float(np.clip(a.speed + acc * dt, 0.0, 20.0))
                vm = 0.5 * (a.speed + v1)
                beta = np.arctan(0.5 * np.tan(c.steer * self.max_steer))
                r = np.radians(a.yaw)
                a.x += vm * np.cos(r + beta) * dt
                a.y += vm * np.sin(r + beta) * dt
                a.yaw = float(np.degrees(r + vm / (self.wheelbase / 2) * np.sin(beta) * dt))
                a.speed = v1
        ego = [a for a in cars if not a.autopilot]
        for s in [a for a in self.actors if a.parent is not None and a.callback and "collision" in a.type_id]:
            for other in cars:
                if other is not s.parent and np.hypot(other.x - s.parent.x, other.y - s.parent.y) < 3.0:
                    s.callback(SimpleNamespace(other_actor=other))
        return ego


@pytest.fixture(scope="module")
def carla_town(tmp_path_factory):
    pytest.importorskip("sumolib", reason="sumolib is not installed (driving extra)")
    from steer.driving.maps import stock_network, sumo_to_opendrive

    d = str(tmp_path_factory.mktemp("carla_town"))
    return open(sumo_to_opendrive(stock_network("grid", d, seed=1, size=3), d + "/town.xodr")).read()


def _carla_env(xodr, obs="vector", n_npcs=0, green_from=1e9, tmp=None):
    from steer.driving.carla_backend import CarlaConfig, CarlaSim
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv
    from steer.driving.simulator import SimConfig

    server = _Server(xodr, green_from=green_from)
    cfg = DriveEnvConfig(sim=SimConfig(n_npcs=n_npcs, n_pedestrians=0, seed=3), obs=obs)
    sim = CarlaSim(cfg.sim, CarlaConfig(), n_routes=8, client=server, map_dir=tmp)
    return server, sim, DriveVectorEnv(1, cfg, autoreset=False, sim=sim)


def test_carla_backend_has_the_embedded_interface(carla_town, tmp_path):
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv
    from steer.driving.simulator import INFRACTIONS, SimConfig

    server, sim, env = _carla_env(carla_town, obs="vector", n_npcs=3, tmp=str(tmp_path))
    # The same observation, measurement and value-input layout as the embedded simulator on that map.
    ours = DriveVectorEnv(1, DriveEnvConfig(sim=SimConfig(map_path=sim.map_path, n_towns=1, routes_per_town=4,
                                                          n_pedestrians=0), obs="vector"), autoreset=False)
    assert env.single_observation_space == ours.single_observation_space
    assert env.metadata["obs_fields"] == ours.metadata["obs_fields"]
    obs, _ = env.reset(seed=0, options={"routes": np.array([0])})
    assert obs["vector"].shape[1:] == ours.single_observation_space["vector"].shape and np.isfinite(obs["vector"]).all()
    # Traffic on the server fills the road-user slots: three vehicles, located on our lanes.
    assert len(sim._npcs) == 3 and (sim.nx[0] < 1e5).sum() == 3
    assert np.hypot(*(sim.map.lane_pose(sim.n_lane[0], sim.n_s[0])[:2] - np.stack([sim.nx[0], sim.ny[0]]))).max() < 1.0
    obs, r, term, trunc, info = env.step(np.array([[0.0, 0.5]], np.float32))
    assert set(INFRACTIONS) <= set(info) and info["speed"][0] > 0.1 and obs["measurements"][0, 0] > 0.01
    # One server tick is one step of our clock; closing destroys every actor and restores the settings.
    assert server.settings.synchronous_mode and server.settings.fixed_delta_seconds == sim.cfg.dt
    sim.close()
    assert server.actors == [] and not server.settings.synchronous_mode


def test_expert_drives_a_route_on_the_server_and_waits_for_its_red_light(carla_town, tmp_path):
    from steer.driving.expert import ExpertDriver
    from steer.driving.roadmap import LIGHT_RED

    server, sim, env = _carla_env(carla_town, obs="none", green_from=20.0, tmp=str(tmp_path))
    route = next(r for r in range(sim.pool.n_routes) if sim.pool.stop_count[r] > 0 and (
        sim.pool.stop_light[r, : sim.pool.stop_count[r]] >= 0).any())
    env.reset(seed=0, options={"routes": np.array([route])})
    assert any(a is not None for a in sim._light_actor)
    driver = ExpertDriver(sim)
    waited, info = False, {}
    for _ in range(1500):
        _, _, lgap, lstate = sim.route_hazards()
        waited |= bool(lstate[0] == LIGHT_RED and lgap[0] < 5.0 and sim.v[0] < 0.1)
        _, _, term, trunc, info = env.step(driver.act())
        if term[0] or trunc[0]:
            break
    # The server moved the ego (our steer sign and frame conversion hold), the light held it, it finished.
    assert info["finished"][0] and info["route_completion"][0] >= 0.99 and waited
    assert not any(info[k][0] for k in ("red_light", "collision_vehicle", "off_road", "route_deviation"))
    sim.close()


def test_server_collisions_and_red_lights_are_infractions(carla_town, tmp_path):
    server, sim, env = _carla_env(carla_town, obs="none", tmp=str(tmp_path))
    route = next(r for r in range(sim.pool.n_routes) if (sim.pool.stop_light[r, : sim.pool.stop_count[r]] >= 0).any())
    env.reset(seed=0, options={"routes": np.array([route])})
    from steer.driving.expert import ExpertDriver

    driver = ExpertDriver(sim)
    info = {}
    for _ in range(1500):  # light-blind: the expert's steering at a steady 8 m/s, through the red light
        a = driver.act()
        a[:, 1] = np.clip((8.0 - sim.v) * 0.5, -1.0, 1.0)
        _, _, term, trunc, info = env.step(a)
        if term[0] or trunc[0]:
            break
    assert info["red_light"][0] and not info["finished"][0]
    # A collision the server's sensor reports ends the episode, typed by what was hit.
    env.reset(seed=0, options={"routes": np.array([route])})
    for hit, flag in (("vehicle.audi.tt", "collision_vehicle"), ("static.prop.streetbarrier", "collision_static"),
                      ("walker.pedestrian.0001", "collision_pedestrian")):
        sensor = next(a for a in server.actors if "collision" in a.type_id)
        sensor.callback(SimpleNamespace(other_actor=SimpleNamespace(type_id=hit)))
        _, _, term, _, info = env.step(np.zeros((1, 2), np.float32))
        assert term[0] and info[flag][0] and sum(bool(info[k][0]) for k in (
            "collision_vehicle", "collision_static", "collision_pedestrian")) == 1
    sim.close()


def test_eval_on_the_carla_backend(carla_town, tmp_path):
    from steer.ops.drive_stages import HeldOut, evaluate_drivers
    from steer.agent.ppo_config import PPOConfig

    server = _Server(carla_town, green_from=0.0)
    table, res = evaluate_drivers(PPOConfig(), HeldOut(routes=2, backend="carla", traffic=0), None, expert=True,
                                  client=server)
    assert res["expert"]["episodes"] == 2 and res["expert"]["route_completion"] > 0.95 and "route completion" in table
    assert server.actors == []
