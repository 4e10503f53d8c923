"""CARLA: route planning over ``carla.Map`` topology (our own A*) and a backend for a real server.

The planner works offline on any ``carla.Map`` (e.g. ``carla.Map(name, xodr_text)`` of an exported
town). :class:`CarlaBackend` drives an ego on a server in synchronous mode with a fixed 0.1 s step
and rendering off, with collision and lane-invasion sensors, and restores the world's settings and
destroys its actors on :meth:`CarlaBackend.close`. :class:`CarlaSim` puts it behind the embedded
simulator's interface (state arrays, observations, measurements, infraction flags). Positions cross
the boundary only through :mod:`steer.driving.carla_coords`.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass

import numpy as np

from steer.driving.carla_coords import from_carla, ours_to_transform, to_carla, transform_to_ours
from steer.driving.geometry import wrap_angle
from steer.driving.roadmap import LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW
from steer.driving.simulator import DrivingSim, SimConfig, map_min_radius, world_from_map


class CarlaUnavailableError(RuntimeError):
    """No CARLA server answers, or the carla client is missing."""

    user_facing = True


class CarlaRoutePlanner:
    """A* over the lane segments of ``carla.Map.get_topology()``, sampled every ``resolution`` metres."""

    def __init__(self, cmap, resolution: float = 1.0):
        self.map = cmap
        self.resolution = resolution
        self.segments: list[np.ndarray] = []  # our-frame points [n, 2] of each segment
        self.keys: list[tuple] = []
        self.succ: dict[int, list[int]] = {}
        start_of: dict[tuple, list[int]] = {}
        end_key: list[tuple] = []
        for entry, exit_ in cmap.get_topology():
            wps = [entry] + list(entry.next_until_lane_end(resolution))
            xs = np.array([w.transform.location.x for w in wps])
            ys = np.array([w.transform.location.y for w in wps])
            x, y, _ = from_carla(xs, ys, np.zeros(len(xs)))
            pts = np.stack([x, y], 1)
            i = len(self.segments)
            self.segments.append(pts)
            self.keys.append((entry.road_id, entry.section_id, entry.lane_id))
            start_of.setdefault(self._node(entry.transform.location), []).append(i)
            end_key.append(self._node(exit_.transform.location))
        for i, k in enumerate(end_key):
            self.succ[i] = [j for j in start_of.get(k, []) if j != i]

    @staticmethod
    def _node(loc) -> tuple[int, int]:
        return (int(round(loc.x * 2)), int(round(loc.y * 2)))  # 0.5 m cells join segment ends

    def _length(self, i: int) -> float:
        return float(np.linalg.norm(np.diff(self.segments[i], axis=0), axis=1).sum())

    def _segment_at(self, x: float, y: float) -> int:
        d = [np.min(np.hypot(p[:, 0] - x, p[:, 1] - y)) for p in self.segments]
        return int(np.argmin(d))

    def plan(self, start_xy, goal_xy) -> np.ndarray:
        """Route polyline [n, 2] in our frame from the lane under ``start_xy`` to the lane under ``goal_xy``."""
        a, b = self._segment_at(*start_xy), self._segment_at(*goal_xy)
        goal = np.asarray(goal_xy, float)
        heap = [(0.0, 0.0, a)]
        parent = {a: -1}
        g = {a: 0.0}
        done = set()
        while heap:
            _, cost, i = heapq.heappop(heap)
            if i in done:
                continue
            done.add(i)
            if i == b:
                break
            for j in self.succ[i]:
                c = cost + self._length(i)
                if c < g.get(j, np.inf):
                    g[j], parent[j] = c, i
                    h = float(np.hypot(*(self.segments[j][0] - goal)))
                    heapq.heappush(heap, (c + h, c, j))
        if b not in parent:
            raise ValueError("no route between these points on this map")
        seq = [b]
        while parent[seq[-1]] >= 0:
            seq.append(parent[seq[-1]])
        seq = seq[::-1]
        pts = np.concatenate([self.segments[i] for i in seq])
        # Cut to the projections of start and goal.
        i0 = int(np.argmin(np.hypot(*(pts[: len(self.segments[a])] - np.asarray(start_xy)).T)))
        tail = len(pts) - len(self.segments[b])
        i1 = tail + int(np.argmin(np.hypot(*(pts[tail:] - goal).T)))
        pts = pts[i0 : i1 + 1]
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-3])
        return pts[keep]


@dataclass(frozen=True)
class CarlaConfig:
    """Connection and episode settings of the CARLA backend."""

    host: str = "localhost"
    """Server host (the tests read ``CARLA_HOST``)."""
    port: int = 2000
    """Server RPC port."""
    timeout_s: float = 10.0
    """Client timeout, seconds."""
    fixed_delta_seconds: float = 0.1
    """Simulation step, seconds."""
    vehicle_blueprint: str = "vehicle.lincoln.mkz_2020"
    """Ego blueprint (falls back to any car)."""
    max_steer: float = 1.0
    """CARLA steer at action 1."""


class CarlaBackend:
    """An ego on a CARLA server, stepped synchronously: ``reset(start pose)`` then ``step([steer, accel])``."""

    def __init__(self, cfg: CarlaConfig = CarlaConfig(), client=None):
        try:
            import carla
        except ImportError as err:  # pragma: no cover - depends on the install
            raise CarlaUnavailableError("the carla client is not installed; install steer-rl[driving].") from err
        self.carla, self.cfg = carla, cfg
        try:
            self.client = client or carla.Client(cfg.host, cfg.port)
            self.client.set_timeout(cfg.timeout_s)
            self.world = self.client.get_world()
        except RuntimeError as err:
            raise CarlaUnavailableError(f"no CARLA server answers at {cfg.host}:{cfg.port}; start one or set "
                                        "CARLA_HOST.") from err
        self._original = self.world.get_settings()
        s = self.world.get_settings()
        s.synchronous_mode = True
        s.fixed_delta_seconds = cfg.fixed_delta_seconds
        s.no_rendering_mode = True
        self.world.apply_settings(s)
        self.actors: list = []
        self.ego = None
        self.collisions: list = []
        self.lane_invasions: list = []

    def load_opendrive(self, xodr: str) -> None:
        """Load a world generated from OpenDRIVE text (keeps synchronous settings)."""
        self.world = self.client.generate_opendrive_world(xodr)
        s = self.world.get_settings()
        s.synchronous_mode, s.no_rendering_mode = True, True
        s.fixed_delta_seconds = self.cfg.fixed_delta_seconds
        self.world.apply_settings(s)

    def reset(self, x: float, y: float, yaw: float) -> None:
        """Spawn the ego at our pose with its collision and lane-invasion sensors."""
        self._destroy()
        lib = self.world.get_blueprint_library()
        found = lib.filter(self.cfg.vehicle_blueprint)
        bp = found[0] if len(found) else lib.filter("vehicle.*")[0]
        self.ego = self.world.spawn_actor(bp, ours_to_transform(x, y, yaw))
        self.actors.append(self.ego)
        for name, sink in (("sensor.other.collision", self.collisions),
                           ("sensor.other.lane_invasion", self.lane_invasions)):
            sensor = self.world.spawn_actor(lib.find(name), self.carla.Transform(), attach_to=self.ego)
            sensor.listen(lambda event, sink=sink: sink.append(event))
            self.actors.append(sensor)
        self.collisions.clear()
        self.lane_invasions.clear()
        self.world.tick()

    def step(self, action) -> dict:
        """Apply [steer, accel] in [-1, 1] for one tick; returns our-frame pose, speed and sensor events."""
        steer, accel = float(np.clip(action[0], -1, 1)), float(np.clip(action[1], -1, 1))
        # Our steer is counter-clockwise positive; CARLA's is clockwise (to the right) positive.
        ctrl = self.carla.VehicleControl(throttle=max(accel, 0.0), brake=max(-accel, 0.0),
                                         steer=-steer * self.cfg.max_steer)
        self.ego.apply_control(ctrl)
        self.world.tick()
        x, y, yaw = transform_to_ours(self.ego.get_transform())
        v = self.ego.get_velocity()
        return {"x": x, "y": y, "yaw": yaw, "speed": float(np.hypot(v.x, v.y)),
                "collision": len(self.collisions) > 0, "lane_invasion": len(self.lane_invasions) > 0}

    def _destroy(self) -> None:
        for a in reversed(self.actors):
            try:
                if hasattr(a, "stop"):
                    a.stop()
                a.destroy()
            except RuntimeError:
                pass
        self.actors.clear()
        self.ego = None

    def close(self) -> None:
        """Destroy our actors and give the world its original settings back."""
        self._destroy()
        try:
            self.world.apply_settings(self._original)
        except RuntimeError:
            pass


_CARLA_STATE = {"Red": LIGHT_RED, "Yellow": LIGHT_YELLOW, "Green": LIGHT_GREEN}
"""CARLA traffic-light state name -> our code (Off and Unknown: no restriction, green)."""


class CarlaSim(DrivingSim):
    """One episode at a time on a CARLA server, with the embedded simulator's state arrays and checks.

    The map is the server's own: ``world.get_map().to_opendrive()`` imported like any OpenDRIVE file
    (:mod:`steer.driving.maps`), so routes, route completion, off-road and the observations are those of
    the embedded simulator on the same roads. The server moves the ego (physics, from [steer, accel] as
    throttle/brake/steer) and the traffic (autopilot); every tick the poses, speeds and sizes of both
    and the live traffic-light states are read back into the state arrays, traffic is located on our
    lanes (for right of way), and the collision sensor's events join the box-overlap collision check
    (by what was hit: vehicle, walker, anything else static). Pedestrians and obstacles of our own are
    not placed; the server's walkers and props count through the collision sensor only. Wrap it with
    ``DriveVectorEnv(1, config, sim=CarlaSim(...))``.
    """

    def __init__(self, cfg: SimConfig = SimConfig(), carla_cfg: CarlaConfig = CarlaConfig(), n_routes: int = 64,
                 client=None, map_dir: str | None = None):
        import hashlib
        import tempfile

        from steer.driving.maps import load_map

        import dataclasses

        # One server tick is one simulator step.
        self.backend = CarlaBackend(dataclasses.replace(carla_cfg, fixed_delta_seconds=cfg.dt), client)
        self.cmap = self.backend.world.get_map()
        xodr = self.cmap.to_opendrive()
        folder = map_dir or os.path.join(tempfile.gettempdir(), "steer-carla-maps")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, hashlib.sha256(xodr.encode()).hexdigest()[:16] + ".xodr")
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                f.write(xodr)
            os.replace(path + ".tmp", path)
        m = load_map(path, map_min_radius(cfg))
        world = world_from_map(m, n_routes, cfg.seed, cfg.route_min_length, cfg.route_max_length, cfg)
        super().__init__(1, cfg, world=world)
        self.map_path = path
        self._live = np.full(max(m.n_lights, 1), LIGHT_GREEN, np.int64)
        self._light_actor = self._match_lights()
        self._npcs: list = []
        from scipy.spatial import cKDTree

        self._tree = cKDTree(m.pts)
        self._pt_lane = np.repeat(np.arange(m.n_lanes), m.lane_count)

    # -------------------------------------------------------------- map <-> server
    def _match_lights(self) -> list:
        """The server's traffic light in front of each of our lights' stop lines (None where none)."""
        import carla

        m = self.map
        actors = [None] * m.n_lights
        for li in range(m.n_lights):
            lanes = np.flatnonzero(m.lane_light == li)
            if len(lanes) == 0:
                continue
            x, y, yaw = m.lane_pose(lanes[:1], np.zeros(1))
            cx, cy, _ = to_carla(x[0] - 1.5 * np.cos(yaw[0]), y[0] - 1.5 * np.sin(yaw[0]), 0.0)
            wp = self.cmap.get_waypoint(carla.Location(float(cx), float(cy), 0.0))
            if wp is None:
                continue
            found = self.backend.world.get_traffic_lights_from_waypoint(wp, 10.0)
            actors[li] = found[0] if len(found) else None
        return actors

    def _locate(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray):
        """(lane, arc length) of the lane point nearest each pose with a heading within 45 degrees."""
        m = self.map
        d, i = self._tree.query(np.stack([x, y], 1), k=min(8, len(m.pts)))
        i = np.atleast_2d(i)
        ok = np.abs(wrap_angle(m.pt_heading[i] - yaw[:, None])) < np.pi / 4
        pick = i[np.arange(len(x)), np.argmax(ok, 1)]
        lane = self._pt_lane[pick]
        return lane, (pick - m.lane_offset[lane]) * m.lane_spacing[lane]

    # -------------------------------------------------------------- lifecycle
    def reset_envs(self, idx, rng=None, routes=None) -> None:
        """Spawn the ego at its route's start with its sensors, and ``n_npcs`` autopilot vehicles at the
        traffic slots the embedded simulator draws."""
        super().reset_envs(np.array([0]), rng, routes=routes)
        be = self.backend
        self._destroy_npcs()
        be.reset(float(self.x[0]), float(self.y[0]), float(self.yaw[0]))
        lib = be.world.get_blueprint_library()
        found = lib.filter(be.cfg.vehicle_blueprint)
        bp = found[0] if len(found) else lib.filter("vehicle.*")[0]
        self._npcs = []
        for k in range(self.cfg.n_npcs):
            actor = be.world.try_spawn_actor(bp, ours_to_transform(float(self.nx[0, k]), float(self.ny[0, k]),
                                                                   float(self.nyaw[0, k])))
            if actor is not None:
                actor.set_autopilot(True)
                self._npcs.append(actor)
        # Our own pedestrians and obstacles are not on the server.
        self.p_active[:] = False
        self.px[:], self.py[:] = 1e6, 1e6
        self.ox[:], self.oy[:] = 1e6, 1e6
        be.world.tick()
        self._read_world()

    def _destroy_npcs(self) -> None:
        for a in self._npcs:
            try:
                a.destroy()
            except RuntimeError:
                pass
        self._npcs = []

    def close(self) -> None:
        """Destroy our actors and give the server its settings back."""
        self._destroy_npcs()
        self.backend.close()

    # -------------------------------------------------------------- stepping
    def _read_world(self) -> None:
        x, y, yaw = transform_to_ours(self.backend.ego.get_transform())
        vel = self.backend.ego.get_velocity()
        self.x[0], self.y[0], self.yaw[0], self.v[0] = x, y, yaw, float(np.hypot(vel.x, vel.y))
        k = self.cfg.n_npcs
        self.nx[0], self.ny[0], self.n_v[0] = 1e6, 1e6, 0.0
        for j, a in enumerate(self._npcs[:k]):
            self.nx[0, j], self.ny[0, j], self.nyaw[0, j] = transform_to_ours(a.get_transform())
            v = a.get_velocity()
            self.n_v[0, j] = float(np.hypot(v.x, v.y))
            ext = a.bounding_box.extent
            self.n_len[0, j], self.n_wid[0, j] = 2.0 * ext.x, 2.0 * ext.y
        n = len(self._npcs[:k])
        if n:
            lane, s = self._locate(self.nx[0, :n], self.ny[0, :n], self.nyaw[0, :n])
            self.n_lane[0, :n], self.n_s[0, :n] = lane, s
            nxt = self.map.lane_succ[lane, 0]
            self.n_next[0, :n] = np.where(nxt >= 0, nxt, lane)
            self.n_off[0, :n] = 0.0
        for li, tl in enumerate(self._light_actor):
            if tl is not None:
                self._live[li] = _CARLA_STATE.get(str(tl.get_state()).rsplit(".", 1)[-1], LIGHT_GREEN)

    def _advance(self, action) -> None:
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0).reshape(1, 2)
        v0 = self.v.copy()
        self.backend.step(action[0])  # applies the control and ticks the server
        self._read_world()
        self.distance = self.distance + 0.5 * (v0 + self.v) * self.cfg.dt
        self.prev_steer = self.last_action[:, 0].astype(np.float64)
        self.last_action = action.astype(np.float32)
        self.t = self.t + self.cfg.dt
        self.steps += 1

    def _measure(self, yaw0, v0):
        res = super()._measure(yaw0, v0)
        hits = [str(getattr(getattr(e, "other_actor", None), "type_id", "")) for e in self.backend.collisions]
        self.backend.collisions.clear()
        infr = dict(res.infractions)
        infr["collision_vehicle"] = infr["collision_vehicle"] | any(h.startswith("vehicle.") for h in hits)
        infr["collision_pedestrian"] = infr["collision_pedestrian"] | any(h.startswith("walker.") for h in hits)
        infr["collision_static"] = infr["collision_static"] | any(
            not h.startswith(("vehicle.", "walker.")) for h in hits)
        hit = infr["collision_vehicle"] | infr["collision_pedestrian"] | infr["collision_static"]
        terminated = res.terminated | hit
        return res._replace(infractions=infr, terminated=terminated, finished=res.finished & ~terminated)

    def light_states(self, light: np.ndarray, env_axis_shape=None) -> np.ndarray:
        """The server's live states of ``light`` ids."""
        return np.where(light >= 0, self._live[np.maximum(light, 0)], -1)

    def _light_states_at(self, env: np.ndarray, light: np.ndarray) -> np.ndarray:
        return self.light_states(light)


def carla_host_from_env() -> tuple[str, int] | None:
    """(host, port) from ``CARLA_HOST`` (``host`` or ``host:port``), or None when unset."""
    v = os.environ.get("CARLA_HOST")
    if not v:
        return None
    host, _, port = v.partition(":")
    return host, int(port or 2000)


__all__ = ["CarlaBackend", "CarlaConfig", "CarlaSim", "CarlaRoutePlanner", "CarlaUnavailableError", "carla_host_from_env",
           "from_carla", "to_carla"]
