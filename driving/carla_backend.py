"""CARLA: route planning over ``carla.Map`` topology (our own A*) and a backend for a real server.

The planner works offline on any ``carla.Map`` (e.g. ``carla.Map(name, xodr_text)`` of an exported
town). :class:`CarlaBackend` drives an ego on a server in synchronous mode with a fixed 0.1 s step
and rendering off, with collision and lane-invasion sensors, and restores the world's settings and
destroys its actors on :meth:`CarlaBackend.close`. Positions cross the boundary only through
:mod:`steer.driving.carla_coords`.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass

import numpy as np

from steer.driving.carla_coords import from_carla, ours_to_transform, to_carla, transform_to_ours


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


def carla_host_from_env() -> tuple[str, int] | None:
    """(host, port) from ``CARLA_HOST`` (``host`` or ``host:port``), or None when unset."""
    v = os.environ.get("CARLA_HOST")
    if not v:
        return None
    host, _, port = v.partition(":")
    return host, int(port or 2000)


__all__ = ["CarlaBackend", "CarlaConfig", "CarlaRoutePlanner", "CarlaUnavailableError", "carla_host_from_env",
           "from_carla", "to_carla"]
