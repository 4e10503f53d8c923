"""The embedded driving simulator: numpy arrays over [envs] for the ego and [envs, npcs] for traffic.

Ego: kinematic bicycle (centre of gravity) at dt = 0.1 s driven by [steer, accel] in [-1, 1].
Traffic: vehicles on rails along lanes (with a lateral offset) with IDM car-following, stopping at
red (and stoppable yellow) lights, stopping at stop signs, yielding at junctions by the map's right
of way (yield signs, stop signs after the stop, permissive greens, left turns across the priority
road), letting pedestrians cross, shifting sideways past obstacles that stand partly in their lane,
changing lanes now and then when the target lane has room, and choosing a random successor at each
lane end. Pedestrians walk across the map's crossings, back and forth, after waiting at the kerb;
they set out when approaching vehicles can stop comfortably (marked crosswalks) or when no vehicle
is near (elsewhere), and stop when a vehicle stands in their way. Per step the simulator measures
route completion (monotone windowed projection) and the infractions: collisions with vehicles,
pedestrians and static obstacles (box overlap behind a distance pre-filter), off-road (share of the
box outside the drivable area by signed distance), outside the route lanes, red light (crossing a
stop line on red), stop sign (crossing a stop sign's line without having stood still within
``stop_zone_m`` before it), route deviation, blocked, timeout. Every public array has the env index
first; nothing on the step path loops over envs in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from steer.driving.geometry import boxes_overlap, point_box_distance, wrap_angle
from steer.driving.maps import load_map
from steer.driving.roadmap import (
    CONNECTOR_LANE, CONTROL_LIGHT, CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED,
    LIGHT_YELLOW, ROAD_LANE, RoadMap, merge_maps,
)
from steer.driving.routes import RoutePool, make_pool, min_turn_radius, project_on_routes, random_route
from steer.driving.rewards import comfort_violations
from steer.driving.town import TownConfig, generate_town

INFRACTIONS = ("collision_vehicle", "collision_static", "collision_pedestrian", "red_light", "stop_sign",
               "off_road", "route_deviation", "blocked", "timeout")
"""Terminal infraction flags, in the order the infos report them."""


@dataclass(frozen=True)
class SimConfig:
    """Parameters of the embedded simulator and of the world it builds."""

    seed: int = 0
    """Seed of the world (towns and route pool); episodes draw from the reset seed."""
    n_towns: int = field(default=4, metadata={"range": "[1, inf)"})
    """Number of generated towns; each env runs one, drawn with its route at reset."""
    town: TownConfig = field(default_factory=TownConfig)
    """Town generator parameters."""
    routes_per_town: int = 64
    """Routes generated per town at construction; a reset picks one."""
    route_min_length: float = 150.0
    """Shortest route, metres."""
    route_max_length: float = 450.0
    """Longest route, metres."""
    n_npcs: int = 7
    """Traffic vehicles per env."""
    spawn_radius: float = 120.0
    """Traffic spawns within this distance of the ego's start when slots allow, metres."""
    dt: float = field(default=0.1, metadata={"range": "(0, inf)"})
    """Step, seconds."""
    wheelbase: float = 2.9
    """Ego wheelbase, metres (centre of gravity in the middle)."""
    max_steer: float = 0.7
    """Steering angle at action 1, radians."""
    max_accel: float = 3.0
    """Acceleration at action +1, m/s^2."""
    max_brake: float = 7.0
    """Deceleration at action -1, m/s^2."""
    max_speed: float = 20.0
    """Speed cap, m/s."""
    vehicle_length: float = 4.5
    """Vehicle length, metres."""
    vehicle_width: float = 2.0
    """Vehicle width, metres."""
    idm_time_headway: float = 1.5
    """IDM desired time headway, seconds."""
    idm_min_gap: float = 2.0
    """IDM jam distance, metres."""
    idm_accel: float = 1.5
    """IDM maximum acceleration, m/s^2."""
    idm_brake: float = 2.0
    """IDM comfortable deceleration, m/s^2."""
    max_decel: float = 8.0
    """Hardest braking of traffic, m/s^2."""
    npc_speed_factor: tuple[float, float] = (0.75, 1.0)
    """Range of traffic desired speed as a share of the comfortable lane speed."""
    timeout_base_s: float = 30.0
    """Time budget of a route: base seconds ..."""
    timeout_speed: float = 2.0
    """... plus route length over this speed (m/s) ..."""
    timeout_light_cycles: float = 1.0
    """... plus this many cycles of the light at each signalled junction entry on the route (a
    queue may need more than one green to clear) ..."""
    timeout_junction_s: float = 10.0
    """... plus this many seconds at each stop-, yield- or priority-controlled junction entry."""
    n_pedestrians: int = 6
    """Pedestrians per env, placed on the crossings along the route (none where the map has none)."""
    pedestrian_speed: tuple[float, float] = (1.0, 1.6)
    """Range of walking speeds, m/s."""
    pedestrian_wait_s: tuple[float, float] = (2.0, 20.0)
    """Range of waiting times at the kerb before crossing, seconds."""
    pedestrian_size: float = 0.6
    """Side of a pedestrian's square box, metres."""
    lane_change_rate: float = 0.03
    """Lane changes a traffic vehicle starts per second (when it is on a road lane with a
    same-direction neighbour and the target lane has room)."""
    lateral_speed: float = 1.5
    """Sideways speed of traffic when changing lanes or shifting past an obstacle, m/s."""
    obstacle_clearance: float = 0.4
    """Sideways room kept from a static obstacle when passing it, metres."""
    max_shift: float = 1.3
    """Largest sideways shift within a lane to pass an obstacle; a vehicle stops behind one that
    needs more, metres."""
    yield_gap_s: float = 6.0
    """A vehicle yields to a foe that can reach its connector within this time, seconds."""
    stop_zone_m: float = 4.0
    """A stop counts when the ego stands still this close before a stop sign's line (front bumper), metres."""
    blocked_s: float = 90.0
    """Seconds below ``blocked_speed`` that end the episode."""
    blocked_speed: float = 0.1
    """Speed under which the ego counts as standing, m/s."""
    route_deviation_m: float = 30.0
    """Distance from the route that ends the episode, metres."""
    offroad_share: float = 0.95
    """Share of the ego box outside the drivable area that ends the episode."""
    ttc_horizons: tuple[float, ...] = (0.5, 1.0)
    """Constant-velocity look-ahead times of the time-to-collision check, seconds."""
    finish_tolerance: float = 1.0
    """The route counts as finished this close to its end, metres."""
    random_light_offsets: bool = True
    """Draw each junction's light phase at reset; False starts every program at its first phase."""
    hazard_window: int = 40
    """Route points (about 1 m apart) searched for vehicles ahead by :meth:`DrivingSim.route_hazards`."""
    start_anywhere: float = 0.0
    """Share of episodes that start at a random point of the route (up to 30 m before its end) at a
    random speed up to the route's comfortable speed there, instead of at the start standing. A
    training aid: the policy meets red lights and queues at every speed early on (evaluation keeps 0)."""
    map_path: str = ""
    """A map file (SUMO ``.net.xml`` or OpenDRIVE ``.xodr``) to drive instead of generated towns: all
    ``n_towns * routes_per_town`` routes are drawn on it ("" generates towns)."""


class StepResult(NamedTuple):
    """What one simulator step measured, arrays [N]."""

    progress_pct: np.ndarray
    route_completion: np.ndarray
    lateral: np.ndarray
    heading_error: np.ndarray
    speed_limit: np.ndarray
    lane_width: np.ndarray
    outside_route_lanes: np.ndarray
    ttc_violation: np.ndarray
    comfort_violations: np.ndarray
    infractions: dict
    terminated: np.ndarray
    finished: np.ndarray


def map_min_radius(cfg: SimConfig = SimConfig()) -> float:
    """Connections of a map file tighter than this (the turning circle of ``cfg``'s car) are left out
    when the file is imported: SUMO's turnarounds go, every turn some car can make stays."""
    return min_turn_radius(cfg.wheelbase, cfg.max_steer, margin=1.0)


def world_from_map(m: RoadMap, n_routes: int, seed: int = 0, min_length: float = 100.0,
                   max_length: float = 400.0, cfg: SimConfig = SimConfig()) -> tuple[RoadMap, RoutePool]:
    """A world over a given map (e.g. an imported network) with ``n_routes`` random routes that the
    vehicle of ``cfg`` can turn through."""
    rng = np.random.default_rng(seed)
    radius = min_turn_radius(cfg.wheelbase, cfg.max_steer)
    routes = [random_route(m, rng, 0, min_length, max_length, min_radius=radius) for _ in range(n_routes)]
    return m, make_pool(m, routes, [0] * n_routes)


def build_world(cfg: SimConfig) -> tuple[RoadMap, RoutePool]:
    """Generate the towns and the route pool of a config (deterministic in ``cfg.seed``), or draw the
    routes on the map file ``cfg.map_path``."""
    if cfg.map_path:
        # Traffic may use every turn a car can make; the ego's routes keep a tracking margin.
        return world_from_map(load_map(cfg.map_path, map_min_radius(cfg)),
                              cfg.n_towns * cfg.routes_per_town, cfg.seed,
                              cfg.route_min_length, cfg.route_max_length, cfg)
    ss = np.random.SeedSequence(cfg.seed)
    town_seeds = ss.generate_state(cfg.n_towns)
    maps = [generate_town(int(s), cfg.town) for s in town_seeds]
    m = merge_maps(maps)
    rng = np.random.default_rng(ss.spawn(1)[0])
    routes, towns = [], []
    for t in range(cfg.n_towns):
        for _ in range(cfg.routes_per_town):
            routes.append(random_route(m, rng, t, cfg.route_min_length, cfg.route_max_length,
                                       min_radius=min_turn_radius(cfg.wheelbase, cfg.max_steer)))
            towns.append(t)
    return m, make_pool(m, routes, towns)


class DrivingSim:
    """N independent driving episodes stepped together (no auto-reset; the env layer does that)."""

    def __init__(self, num_envs: int, cfg: SimConfig = SimConfig(), world: tuple[RoadMap, RoutePool] | None = None):
        self.cfg = cfg
        self.num_envs = num_envs
        self.map, self.pool = world if world is not None else build_world(cfg)
        n, k = num_envs, cfg.n_npcs
        self.rng = np.random.default_rng(cfg.seed)
        f64 = lambda *s: np.zeros(s)  # noqa: E731
        # ego
        self.x, self.y, self.yaw, self.v = f64(n), f64(n), f64(n), f64(n)
        self.last_action = np.zeros((n, 2), np.float32)
        self.prev_steer = f64(n)
        self.prev_yaw_rate, self.prev_lon_acc, self.prev_lat_acc = f64(n), f64(n), f64(n)
        self.length = np.full(n, cfg.vehicle_length)
        self.width = np.full(n, cfg.vehicle_width)
        # traffic
        self.n_lane = np.zeros((n, k), np.int64)
        self.n_next = np.zeros((n, k), np.int64)
        self.n_s, self.n_v, self.n_fac = f64(n, k), f64(n, k), np.ones((n, k))
        self.nx, self.ny, self.nyaw = f64(n, k), f64(n, k), f64(n, k)
        self.n_len = np.full((n, k), cfg.vehicle_length)
        self.n_wid = np.full((n, k), cfg.vehicle_width)
        self.n_off = f64(n, k)  # sideways offset from the lane's centre line, left positive
        self.n_stopped = np.zeros((n, k), bool)  # has stood at the stop sign ahead
        self.n_lc_wait = f64(n, k)  # seconds before the next lane change may start
        # pedestrians [N, P]: walking from one end of a crossing to the other and back
        p = cfg.n_pedestrians
        self.p_cross = np.zeros((n, p), np.int64)
        self.p_active = np.zeros((n, p), bool)
        self.p_dir = np.ones((n, p))
        self.p_u = f64(n, p)
        self.p_lat = f64(n, p)
        self.p_walk = np.zeros((n, p), bool)
        self.p_wait = f64(n, p)
        self.p_speed = np.ones((n, p))
        self.px, self.py, self.pyaw, self.pv = np.full((n, p), 1e6), np.full((n, p), 1e6), f64(n, p), f64(n, p)
        self.p_size = np.full((n, p), cfg.pedestrian_size)
        self.p_halt_by = -np.ones((n, p), np.int64)  # vehicle (traffic index, K for the ego) a pedestrian waits for
        # static obstacles of each env's town [N, O] (padding far away)
        m = self.map
        o_max = max(1, int(m.town_obstacle_count.max()) if len(m.town_obstacle_count) else 1)
        self._town_obstacles = -np.ones((m.n_towns, o_max), np.int64)
        for t_ in range(m.n_towns):
            c_ = m.town_obstacle_count[t_]
            self._town_obstacles[t_, :c_] = m.town_obstacle_offset[t_] + np.arange(c_)
        self.ox, self.oy = np.full((n, o_max), 1e6), np.full((n, o_max), 1e6)
        self.oyaw, self.olen, self.owid = f64(n, o_max), np.ones((n, o_max)), np.ones((n, o_max))
        self.okind = np.zeros((n, o_max), np.int64)
        self._route_crossings = self._crossings_near_routes()
        self.stop_done = np.zeros(n, bool)  # the ego stood still before the stop sign ahead        # episode
        self.route = np.zeros(n, np.int64)
        self.town = np.zeros(n, np.int64)
        self.s = f64(n)
        self.lateral = f64(n)
        self.seg = np.zeros(n, np.int64)
        self.t = f64(n)
        self.steps = np.zeros(n, np.int64)
        self.time_limit = f64(n)
        self.blocked_t = f64(n)
        self.distance = f64(n)
        self.group_offset = f64(n, max(self.map.n_groups, 1))

    def _crossings_near_routes(self, radius: float = 12.0) -> np.ndarray:
        """[R, C] the crossings whose middle lies within ``radius`` of each route (-1 padding)."""
        m, pool = self.map, self.pool
        mid = (m.crossing_a + m.crossing_b) / 2.0
        near = []
        for r in range(pool.n_routes):
            t_ = pool.town[r]
            o, c = m.town_crossing_offset[t_], m.town_crossing_count[t_]
            pts = pool.pts[r, : pool.n[r]]
            d = np.hypot(mid[o : o + c, None, 0] - pts[None, :, 0], mid[o : o + c, None, 1] - pts[None, :, 1]).min(1) \
                if c else np.zeros(0)
            near.append(o + np.flatnonzero(d < radius))
        out = -np.ones((pool.n_routes, max(1, max(len(x) for x in near))), np.int64)
        for r, x in enumerate(near):
            out[r, : len(x)] = x
        return out
    # ---------------------------------------------------------------- reset
    def reset_envs(self, idx: np.ndarray, rng: np.random.Generator | None = None,
                   routes: np.ndarray | None = None, start_s: np.ndarray | None = None,
                   start_v: np.ndarray | None = None) -> None:
        """Start new episodes in envs ``idx``: a route from the pool, the ego at its start, fresh traffic.

        ``start_s`` / ``start_v`` [len(idx)] place the ego that far along its route (metres) at that
        speed instead (a training curriculum chooses them; traffic spawns around the start)."""
        rng = self.rng if rng is None else rng
        idx = np.asarray(idx, np.int64)
        if len(idx) == 0:
            return
        cfg, m, pool = self.cfg, self.map, self.pool
        r = rng.integers(0, pool.n_routes, len(idx)) if routes is None else np.asarray(routes, np.int64)
        self.route[idx] = r
        self.town[idx] = pool.town[r]
        i0 = np.zeros(len(idx), np.int64)
        v0 = np.zeros(len(idx))
        if cfg.start_anywhere > 0:
            anywhere = rng.random(len(idx)) < cfg.start_anywhere
            last = np.maximum(((pool.length[r] - 30.0) / pool.spacing[r]).astype(np.int64), 0)
            i0 = np.where(anywhere, (rng.random(len(idx)) * (last + 1)).astype(np.int64), 0)
            v0 = np.where(anywhere, rng.random(len(idx)) * pool.comfort_speed[r, i0], 0.0)
        if start_s is not None:
            i0 = np.clip((np.asarray(start_s) / pool.spacing[r]).astype(np.int64), 0, pool.n[r] - 1)
            v0 = np.zeros(len(idx)) if start_v is None else np.asarray(start_v, np.float64)
        self.x[idx] = pool.pts[r, i0, 0]
        self.y[idx] = pool.pts[r, i0, 1]
        self.yaw[idx] = pool.heading[r, i0]
        self.v[idx] = v0
        self.last_action[idx] = 0.0
        self.prev_steer[idx] = 0.0
        self.prev_yaw_rate[idx] = self.prev_lon_acc[idx] = self.prev_lat_acc[idx] = 0.0
        self.s[idx] = i0 * pool.spacing[r]
        self.lateral[idx] = 0.0
        self.seg[idx] = i0
        self.t[idx] = 0.0
        self.steps[idx] = 0
        self.time_limit[idx] = self.time_budget(r)
        self.stop_done[idx] = False
        self.blocked_t[idx] = 0.0
        self.distance[idx] = 0.0
        self.group_offset[idx] = (rng.uniform(0.0, 1000.0, (len(idx), self.group_offset.shape[1]))
                                  if cfg.random_light_offsets else 0.0)
        k = cfg.n_npcs
        for e in idx:  # resets are rare next to steps; the slot choice is clearer per env
            t = self.town[e]
            o, c = m.town_slot_offset[t], m.town_slot_count[t]
            xy = m.slot_xy[o : o + c]
            d = np.hypot(xy[:, 0] - self.x[e], xy[:, 1] - self.y[e])
            ok = np.flatnonzero((d > 15.0) & (d < cfg.spawn_radius))
            if len(ok) < k:
                ok = np.flatnonzero(d > 15.0)
            pick = o + rng.choice(ok, k, replace=len(ok) < k)
            self.n_lane[e] = m.slot_lane[pick]
            self.n_s[e] = m.slot_s[pick]
        self.n_v[idx] = 0.5 * m.lane_comfort_speed[self.n_lane[idx]]
        self.n_fac[idx] = rng.uniform(*cfg.npc_speed_factor, (len(idx), k))
        self.n_next[idx] = self._random_successor(self.n_lane[idx], rng)
        self.n_off[idx] = 0.0
        self.n_stopped[idx] = False
        self.n_lc_wait[idx] = rng.uniform(0.0, 10.0, (len(idx), k))
        x, y, h = m.lane_pose(self.n_lane[idx], self.n_s[idx])
        self.nx[idx], self.ny[idx], self.nyaw[idx] = x, y, h
        # Static obstacles of the town.
        ob = self._town_obstacles[self.town[idx]]
        has = ob >= 0
        obi = np.maximum(ob, 0)
        if len(m.obstacle_xy):
            self.ox[idx] = np.where(has, m.obstacle_xy[obi, 0], 1e6)
            self.oy[idx] = np.where(has, m.obstacle_xy[obi, 1], 1e6)
            self.oyaw[idx] = m.obstacle_yaw[obi]
            self.olen[idx], self.owid[idx] = m.obstacle_length[obi], m.obstacle_width[obi]
            self.okind[idx] = m.obstacle_kind[obi]
        # Pedestrians: on the route's crossings (in turn), waiting at a random end.
        p = cfg.n_pedestrians
        if p:
            rc = self._route_crossings[r]
            cnt = (rc >= 0).sum(1)
            j = (np.arange(p)[None, :] + rng.integers(0, 1000, (len(idx), 1))) % np.maximum(cnt, 1)[:, None]
            self.p_cross[idx] = np.take_along_axis(np.maximum(rc, 0), j, 1)
            self.p_active[idx] = (cnt > 0)[:, None]
            self.p_dir[idx] = np.where(rng.random((len(idx), p)) < 0.5, 1.0, -1.0)
            self.p_u[idx] = 0.0
            w = m.crossing_width[self.p_cross[idx]] if len(m.crossing_width) else np.ones((len(idx), p))
            self.p_lat[idx] = rng.uniform(-0.5, 0.5, (len(idx), p)) * np.maximum(w - 1.0, 0.0)
            self.p_walk[idx] = False
            self.p_halt_by[idx] = -1
            self.p_wait[idx] = rng.uniform(0.0, cfg.pedestrian_wait_s[1], (len(idx), p))
            self.p_speed[idx] = rng.uniform(*cfg.pedestrian_speed, (len(idx), p))
            self._place_pedestrians(idx)

    def time_budget(self, routes: np.ndarray) -> np.ndarray:
        """Seconds allowed for routes: base + length / speed + a light cycle per signalled junction
        entry (a red and a queue) + ``timeout_junction_s`` per other controlled or yielding entry."""
        cfg, pool, m = self.cfg, self.pool, self.map
        routes = np.asarray(routes, np.int64)
        light = pool.stop_light[routes]
        entry = np.isfinite(pool.stop_s[routes])
        lit = entry & (light >= 0)
        cycles = np.where(lit, m.light_cycle[np.maximum(light, 0)], 0.0).sum(1) if m.n_lights else 0.0
        lane = np.maximum(pool.stop_lane[routes], 0)
        waits = entry & ~lit & ((pool.stop_control[routes] != CONTROL_NONE) | m.lane_yields[lane].any(-1))
        return (cfg.timeout_base_s + pool.length[routes] / cfg.timeout_speed + cfg.timeout_light_cycles * cycles
                + cfg.timeout_junction_s * waits.sum(1))

    def _crossing_ends(self, idx=slice(None)):
        """(start [n, P, 2], unit direction [n, P, 2], length [n, P]) of each pedestrian's current walk."""
        m = self.map
        c = self.p_cross[idx]
        a, b = m.crossing_a[c], m.crossing_b[c]
        fwd = (self.p_dir[idx] > 0)[..., None]
        start, end = np.where(fwd, a, b), np.where(fwd, b, a)
        d = end - start
        length = np.maximum(np.hypot(d[..., 0], d[..., 1]), 1e-6)
        return start, d / length[..., None], length

    def _place_pedestrians(self, idx=slice(None), ends=None) -> None:
        if not len(self.map.crossing_a):
            return
        start, u, _ = self._crossing_ends(idx) if ends is None else ends
        nx_, ny_ = -u[..., 1], u[..., 0]
        x = start[..., 0] + u[..., 0] * self.p_u[idx] + nx_ * self.p_lat[idx]
        y = start[..., 1] + u[..., 1] * self.p_u[idx] + ny_ * self.p_lat[idx]
        act = self.p_active[idx]
        self.px[idx] = np.where(act, x, 1e6)
        self.py[idx] = np.where(act, y, 1e6)
        self.pyaw[idx] = np.arctan2(u[..., 1], u[..., 0])

    def _random_successor(self, lane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cnt = self.map.lane_succ_count[lane]
        pick = (rng.random(lane.shape) * cnt).astype(np.int64)
        nxt = self.map.lane_succ[lane, np.minimum(pick, self.map.lane_succ.shape[1] - 1)]
        # A lane without successors (edge of an imported network) keeps the vehicle on it.
        return np.where(cnt > 0, nxt, lane)

    # ---------------------------------------------------------------- lights
    def light_states(self, light: np.ndarray, env_axis_shape=None) -> np.ndarray:
        """State codes of ``light`` ids [N, ...] at each env's current time."""
        return self._light_states_at(np.arange(self.num_envs), light)

    def _light_states_at(self, env: np.ndarray, light: np.ndarray) -> np.ndarray:
        """State codes of ``light`` ids [len(env), ...] at the times of envs ``env`` (-1 where light is -1)."""
        m = self.map
        li = np.maximum(light, 0)
        extra = (None,) * (light.ndim - 1)
        e = env[(slice(None),) + extra]
        off = self.group_offset[e, m.light_group[li]]
        st = m.light_state(li, self.t[e], off)
        return np.where(light >= 0, st, -1)

    # ---------------------------------------------------------------- junctions
    def _next_entry(self):
        """(index into the route's stop lines, whether there is one) of the ego's next junction entry."""
        ahead = self.pool.stop_s[self.route] > self.s[:, None]
        return np.argmax(ahead, 1), ahead.any(1)

    def _vehicles(self):
        """Every vehicle, traffic then the ego, arrays [N, K+1]: x, y, yaw, speed, half length, half width."""
        cat = lambda a, b: np.concatenate([a, b[:, None]], 1)  # noqa: E731
        return (cat(self.nx, self.x), cat(self.ny, self.y), cat(self.nyaw, self.yaw), cat(self.n_v, self.v),
                cat(self.n_len, self.length) / 2.0, cat(self.n_wid, self.width) / 2.0)

    def _junction_states(self):
        """Where every vehicle (traffic, then the ego) is with respect to junctions, arrays [N, K+1]:
        the connector it is on (-1 none) and its arc length there, the connector it approaches (-1
        none) and its front bumper's distance to that stop line, its speed and half length."""
        m, pool, r = self.map, self.pool, self.route
        conn = m.lane_kind[self.n_lane] == CONNECTOR_LANE
        inside = np.where(conn, self.n_lane, -1)
        app = np.where(~conn & (m.lane_kind[self.n_next] == CONNECTOR_LANE), self.n_next, -1)
        dist = m.lane_length[self.n_lane] - self.n_s - self.n_len / 2.0
        el = pool.point_lane[r, self.seg]
        e_in = np.where(m.lane_kind[el] == CONNECTOR_LANE, el, -1)
        j, has = self._next_entry()
        rows = np.arange(self.num_envs)
        e_app = np.where(has, pool.stop_lane[r, j], -1)
        e_dist = np.where(has, pool.stop_s[r, j] - self.s - self.length / 2.0, np.inf)
        cat = lambda a, b: np.concatenate([a, b[:, None]], 1)  # noqa: E731
        return (cat(inside, e_in), cat(self.n_s, pool.point_lane_s[r, self.seg]), cat(app, e_app),
                cat(dist, e_dist[rows]), cat(self.n_v, self.v), cat(self.n_len, self.length) / 2.0)

    def _must_yield(self, env: np.ndarray, conn: np.ndarray, states) -> np.ndarray:
        """Whether a vehicle of env ``env`` about to enter connector ``conn`` must wait (arrays [D]).

        It waits while a vehicle on a conflicting connector has not passed the meeting point (whoever
        has right of way), and while a vehicle that will reach a connector it yields to within
        ``yield_gap_s`` (or stands at that stop line) is there. On a permissive green it also yields to
        every conflicting connector whose light is green or yellow; foes held by red are ignored.
        """
        m, cfg = self.map, self.cfg
        inside, ins_s, app, dist, v, half = (a[env] for a in states)  # [D, V]
        foe, foe_s, yields = m.lane_foe[conn], m.lane_foe_s[conn], m.lane_yields[conn]  # [D, F]
        valid = foe >= 0
        fl = np.where(valid, m.lane_light[np.maximum(foe, 0)], -1)
        fst = self._light_states_at(env, fl)
        foe_go = (fl < 0) | (fst == LIGHT_GREEN) | (fst == LIGHT_GREEN_YIELD) | (fst == LIGHT_YELLOW)
        own = self._light_states_at(env, m.lane_light[conn])
        protected_foe = (fl >= 0) & ((fst == LIGHT_GREEN) | (fst == LIGHT_YELLOW))
        yields = np.where((own == LIGHT_GREEN_YIELD)[:, None], protected_foe | (yields & foe_go), yields & foe_go)
        on = (inside[:, None, :] == foe[:, :, None]) & valid[..., None]
        not_past = ins_s[:, None, :] < foe_s[:, :, None] + 2.0 * half[:, None, :] + 1.0
        coming = (dist < np.maximum(v, 0.1) * cfg.yield_gap_s) | (dist < 4.0)
        near = (app[:, None, :] == foe[:, :, None]) & (yields & valid)[..., None] & coming[:, None, :]
        return ((on & not_past) | near).any((1, 2))

    # ---------------------------------------------------------------- obstacles and pedestrians
    def _obstacle_shift(self, obstacle: np.ndarray, half_width: np.ndarray, edge=None) -> np.ndarray:
        """Sideways shift (left positive) that passes ``obstacle`` (-1: none, shift 0) with the clearance."""
        m, cfg = self.map, self.cfg
        if edge is None:
            edge = m.obstacle_edge[np.maximum(obstacle, 0)] if len(m.obstacle_edge) else np.zeros(obstacle.shape)
        need = np.where(edge < 0, np.maximum(edge + cfg.obstacle_clearance + half_width, 0.0),
                        np.minimum(edge - cfg.obstacle_clearance - half_width, 0.0))
        return np.where(obstacle >= 0, need, 0.0)

    def _walking(self) -> np.ndarray:
        """Pedestrians on the road (walking or standing mid-crossing), [N, P]."""
        return self.p_active & self.p_walk

    def _pedestrian_step(self) -> None:
        cfg, m, dt = self.cfg, self.map, self.cfg.dt
        if not cfg.n_pedestrians or not len(m.crossing_a):
            return
        start, u, length = self._crossing_ends()
        vx, vy, vyaw, vv, vhl, vhw = self._vehicles()
        self.p_wait = np.where(self.p_walk, self.p_wait, self.p_wait - dt)
        ready = self.p_active & ~self.p_walk & (self.p_wait <= 0.0)
        if ready.any():
            e, j = np.nonzero(ready)
            st, uu, ll = start[e, j], u[e, j], length[e, j]
            nx_, ny_ = -uu[:, 1:2], uu[:, 0:1]
            rx, ry = vx[e] - st[:, 0:1], vy[e] - st[:, 1:2]
            along = rx * uu[:, 0:1] + ry * uu[:, 1:2]
            perp = rx * nx_ + ry * ny_
            vperp = vv[e] * (np.cos(vyaw[e]) * nx_ + np.sin(vyaw[e]) * ny_)
            band = (along > -3.0) & (along < ll[:, None] + 3.0)
            on_cross = band & (np.abs(perp) < vhl[e] + 2.0)
            towards = perp * vperp < 0.0
            d = np.abs(perp) - vhl[e] - 1.0
            vp = np.abs(vperp)
            can_stop = d > vp * 1.0 + vp * vp / (2.0 * 3.0) + 2.0
            clear_long = d > vp * (ll / self.p_speed[e, j] + 3.0)[:, None]
            ok = np.where(m.crossing_marked[self.p_cross[e, j]][:, None], can_stop, clear_long)
            go = ~(on_cross | (band & towards & ~ok)).any(1)
            self.p_walk[e[go], j[go]] = True
            self.p_wait[e[~go], j[~go]] = 0.5
        walking = self._walking()
        # Someone standing in the way: wait where you are. The vehicle that stops a pedestrian need
        # not wait for that pedestrian (no mutual waiting).
        self.p_halt_by = np.full(walking.shape, -1, np.int64)
        e, j = np.nonzero(walking)
        if len(e):
            ax = self.px[e, j] + u[e, j, 0] * 0.8
            ay = self.py[e, j] + u[e, j, 1] * 0.8
            d = point_box_distance(ax[:, None], ay[:, None], vx[e], vy[e], vyaw[e], 2.0 * vhl[e], 2.0 * vhw[e])
            close = d < self.p_size[e, j][:, None] / 2.0 + 0.2
            self.p_halt_by[e, j] = np.where(close.any(1), close.argmax(1), -1)
        halted = self.p_halt_by >= 0
        moving = walking & ~halted
        self.p_u = np.where(moving, self.p_u + self.p_speed * dt, self.p_u)
        arrived = walking & (self.p_u >= length)
        if arrived.any():
            self.p_walk = self.p_walk & ~arrived
            self.p_u = np.where(arrived, 0.0, self.p_u)
            self.p_dir = np.where(arrived, -self.p_dir, self.p_dir)
            self.p_wait = np.where(arrived, self.rng.uniform(*cfg.pedestrian_wait_s, arrived.shape), self.p_wait)
            moving &= ~arrived
        self.pv = np.where(moving, self.p_speed, 0.0)
        self._place_pedestrians(ends=(start, u, length))

    def pedestrian_gaps(self, x, y, yaw, half_len, half_wid, horizons=(0.0, 1.0, 2.0), reach: float = 30.0):
        """Distance from the front of vehicles [N, V] to the nearest pedestrian in their path now or
        at the given look-ahead times (constant velocity), metres (inf if none). A pedestrian who
        waits for vehicle v does not count for v."""
        gap = np.full(x.shape, np.inf)
        if not self.cfg.n_pedestrians:
            return gap
        e, p = np.nonzero(self._walking())  # few are on the road: work on those alone
        if not len(e):
            return gap
        c, s = np.cos(yaw[e]), np.sin(yaw[e])
        speed = self.pv[e, p]
        pvx, pvy = speed * np.cos(self.pyaw[e, p]), speed * np.sin(self.pyaw[e, p])
        mine = self.p_halt_by[e, p][:, None] == np.arange(x.shape[1])[None, :]
        width = half_wid[e] + 0.8 + self.cfg.pedestrian_size / 2
        g = np.full((len(e), x.shape[1]), np.inf)
        for tau in horizons:
            dx = (self.px[e, p] + pvx * tau)[:, None] - x[e]
            dy = (self.py[e, p] + pvy * tau)[:, None] - y[e]
            lon = dx * c + dy * s
            hit = (lon > 0) & (lon < reach) & (np.abs(-dx * s + dy * c) < width) & ~mine
            g = np.minimum(g, np.where(hit, lon, np.inf))
        np.minimum.at(gap, e, g)
        return np.maximum(gap - half_len - 1.5, 0.05)

    # ---------------------------------------------------------------- traffic
    def _traffic_step(self) -> None:
        cfg, m, dt = self.cfg, self.map, self.cfg.dt
        lane, s, v, nxt = self.n_lane, self.n_s, self.n_v, self.n_next
        length = m.lane_length[lane]
        rem = length - s
        half = self.n_len / 2.0
        ctl = m.lane_control[nxt]
        entering = (m.lane_kind[lane] == ROAD_LANE) & (m.lane_kind[nxt] == CONNECTOR_LANE)
        stop_gap = rem - half - 1.0
        # Desired speed: comfortable speed of this lane, and of the next one braking ahead of it
        # (slow, 4 m/s, at a yield sign's line).
        v_next = np.where(entering & (ctl == CONTROL_YIELD), np.minimum(m.lane_comfort_speed[nxt], 4.0),
                          m.lane_comfort_speed[nxt])
        v0 = self.n_fac * np.minimum(m.lane_comfort_speed[lane], np.sqrt(v_next**2 + 2.0 * cfg.idm_brake * rem))
        v0 = np.maximum(v0, 0.5)
        # Leader on the same lane or on the chosen next lane.
        same = lane[:, :, None] == lane[:, None, :]
        ahead = s[:, None, :] - s[:, :, None]
        gap = np.where(same & (ahead > 0), ahead, np.inf)
        on_next = nxt[:, :, None] == lane[:, None, :]
        gap = np.minimum(gap, np.where(on_next, rem[:, :, None] + s[:, None, :], np.inf))
        gap = gap - half[:, :, None] - half[:, None, :]
        lead_v = np.broadcast_to(v[:, None, :], gap.shape)
        # Corridor check straight ahead: catches the ego and vehicles between lanes.
        c, sn = np.cos(self.nyaw), np.sin(self.nyaw)
        ox = np.concatenate([self.nx, self.x[:, None]], 1)
        oy = np.concatenate([self.ny, self.y[:, None]], 1)
        oyaw = np.concatenate([self.nyaw, self.yaw[:, None]], 1)
        ov = np.concatenate([v, self.v[:, None]], 1)
        olen = np.concatenate([self.n_len, self.length[:, None]], 1)
        dx = ox[:, None, :] - self.nx[:, :, None]
        dy = oy[:, None, :] - self.ny[:, :, None]
        c3, s3 = c[:, :, None], sn[:, :, None]
        lon = dx * c3 + dy * s3
        lat = -dx * s3 + dy * c3
        k = self.cfg.n_npcs
        oc, osn = np.cos(oyaw)[:, None, :], np.sin(oyaw)[:, None, :]
        cosd = oc * c3 + osn * s3  # cos and |sin| of the other's heading relative to this one's
        sind = np.abs(osn * c3 - oc * s3)
        not_self = ~np.eye(k + 1, dtype=bool)[:k]
        is_ego = np.zeros(k + 1, bool)
        is_ego[-1] = True
        # The other's box across and along this vehicle's heading (a turning vehicle's rear sticks out).
        hl = olen[:, None, :] / 2.0
        hw = np.concatenate([self.n_wid, self.width[:, None]], 1)[:, None, :] / 2.0
        acos = np.abs(cosd)
        corridor = ((lon > 0) & (lon < 40.0) & (np.abs(lat) < self.n_wid[:, :, None] / 2.0 + 0.2 + sind * hl + acos * hw)
                    & not_self & ((cosd > -0.7) | is_ego))
        cgap = np.where(corridor, lon - half[:, :, None] - acos * hl - sind * hw, np.inf)
        cv = np.maximum(ov[:, None, :] * cosd, 0.0)
        all_gap = np.concatenate([gap, np.full(gap.shape[:2] + (1,), np.inf)], 2)
        all_v = np.concatenate([lead_v, np.zeros(gap.shape[:2] + (1,))], 2)
        all_gap = np.minimum(all_gap, cgap)
        all_v = np.where(cgap <= all_gap, cv, all_v)
        j = np.argmin(all_gap, axis=2)
        g = np.take_along_axis(all_gap, j[..., None], 2)[..., 0]
        lv = np.take_along_axis(all_v, j[..., None], 2)[..., 0]
        # Pedestrians in the path, and obstacles too wide to pass within the lane, stand ahead.
        still = self.pedestrian_gaps(self.nx, self.ny, self.nyaw, half, self.n_wid / 2.0)
        ob = m.lane_obstacle[lane]
        need = self._obstacle_shift(ob, self.n_wid / 2.0)
        obi = np.maximum(ob, 0)
        if len(m.obstacle_s0):
            blocking = (ob >= 0) & (np.abs(need) > cfg.max_shift) & (s < m.obstacle_s1[obi])
            still = np.minimum(still, np.where(blocking, np.maximum(m.obstacle_s0[obi] - s - half - 1.0, 0.05), np.inf))
        # Junction entry: red (or stoppable yellow) light, a stop sign until stood at, right of way.
        st = self.light_states(m.lane_light[nxt])
        must_stop = entering & ((st == LIGHT_RED) | ((st == LIGHT_YELLOW) & (stop_gap > v * v / (2.0 * 3.0))))
        stop_sign = entering & (ctl == CONTROL_STOP)
        self.n_stopped |= stop_sign & (v < 0.1) & (stop_gap < cfg.stop_zone_m)
        must_stop |= stop_sign & ~self.n_stopped
        decide = (entering & ~must_stop & (m.lane_foe[nxt, 0] >= 0) & (st != LIGHT_GREEN) & (stop_gap < 25.0)
                  & (stop_gap > v * v / (2.0 * cfg.max_decel)))
        if decide.any():
            e, jj = np.nonzero(decide)
            wait = self._must_yield(e, nxt[e, jj], self._junction_states())
            must_stop[e[wait], jj[wait]] = True
        still = np.minimum(still, np.where(must_stop & (stop_gap > -0.5), np.maximum(stop_gap, 0.05), np.inf))
        use = still < g
        g = np.where(use, still, g)
        lv = np.where(use, 0.0, lv)
        a = idm_accel(v, v0, g, lv, cfg)
        a = np.clip(a, -cfg.max_decel, cfg.idm_accel)
        v_new = np.maximum(v + a * dt, 0.0)
        s = s + 0.5 * (v + v_new) * dt
        v = v_new
        moved = np.zeros(lane.shape, bool)
        for _ in range(3):  # short connectors can be crossed in one step
            over = (s > m.lane_length[lane]) & (m.lane_succ_count[lane] > 0)
            if not over.any():
                break
            moved |= over
            s = np.where(over, s - m.lane_length[lane], s)
            new_lane = np.where(over, nxt, lane)
            nxt = np.where(over, self._random_successor(new_lane, self.rng), nxt)
            lane = new_lane
        # Vehicles that reached a dead end (border of an imported network) reappear at a spawn slot.
        dead = (s > m.lane_length[lane]) & (m.lane_succ_count[lane] == 0)
        if dead.any():
            e, j = np.nonzero(dead)
            t = self.town[e]
            cand = m.town_slot_offset[t][:, None] + (self.rng.random((len(e), 4)) * m.town_slot_count[t][:, None]).astype(np.int64)
            d = np.hypot(m.slot_xy[cand, 0] - self.x[e][:, None], m.slot_xy[cand, 1] - self.y[e][:, None])
            pick = cand[np.arange(len(e)), np.argmax(d, 1)]
            lane[e, j], s[e, j], v[e, j] = m.slot_lane[pick], m.slot_s[pick], 0.0
            nxt[e, j] = self._random_successor(lane[e, j], self.rng)
            self.n_off[e, j] = 0.0
            moved |= dead
        self.n_stopped &= ~moved
        # Sideways: towards the shift that passes an obstacle on the lane (or back to the centre line).
        ob = m.lane_obstacle[lane]
        target = np.zeros(lane.shape)
        if len(m.obstacle_s0):
            obi = np.maximum(ob, 0)
            near = (ob >= 0) & (s > m.obstacle_s0[obi] - half - 10.0) & (s < m.obstacle_s1[obi] + half + 3.0)
            need = self._obstacle_shift(ob, self.n_wid / 2.0)
            target = np.where(near & (np.abs(need) <= cfg.max_shift), need, 0.0)
        step = np.clip(target - self.n_off, -cfg.lateral_speed * dt, cfg.lateral_speed * dt)
        self.n_off = self.n_off + step
        self.n_lane, self.n_s, self.n_v, self.n_next = lane, s, v, nxt
        self._lane_changes()
        x, y, h = m.lane_pose(self.n_lane, self.n_s)
        self.nx = x - np.sin(h) * self.n_off
        self.ny = y + np.cos(h) * self.n_off
        self.nyaw = h + np.arctan2(step / dt, np.maximum(self.n_v, 1.0))

    def _lane_changes(self) -> None:
        """Start a few lane changes: a vehicle on a road lane with a same-direction neighbour moves to it
        when the target spot has room (the lateral move happens through ``n_off``)."""
        cfg, m, dt = self.cfg, self.map, self.cfg.dt
        self.n_lc_wait = self.n_lc_wait - dt
        lane, s = self.n_lane, self.n_s
        left, right = m.lane_left[lane], m.lane_right[lane]
        cand = ((self.n_lc_wait <= 0) & (m.lane_kind[lane] == ROAD_LANE) & ((left >= 0) | (right >= 0))
                & (s > 10.0) & (s < m.lane_length[lane] - 35.0) & (np.abs(self.n_off) < 0.05) & (self.n_v > 2.0)
                & (m.lane_obstacle[lane] < 0))
        cand &= self.rng.random(lane.shape) < cfg.lane_change_rate * dt
        if not cand.any():
            return
        e, j = np.nonzero(cand)
        go_left = (left[e, j] >= 0) & ((right[e, j] < 0) | (self.rng.random(len(e)) < 0.5))
        tgt = np.where(go_left, left[e, j], right[e, j])
        s_new = s[e, j] * m.lane_length[tgt] / m.lane_length[lane[e, j]]
        tx, ty, _ = m.lane_pose(tgt, s_new)
        vx, vy, _, vv, vhl, _ = self._vehicles()
        d = np.hypot(vx[e] - tx[:, None], vy[e] - ty[:, None])
        room = d > 10.0 + 1.5 * vv[e]
        room[np.arange(len(e)), j] = True
        ok = room.all(1) & (m.lane_obstacle[tgt] < 0)
        e, j, tgt, s_new, go_left = e[ok], j[ok], tgt[ok], s_new[ok], go_left[ok]
        if not len(e):
            return
        w = 0.5 * (m.lane_width[tgt] + m.lane_width[lane[e, j]])
        self.n_off[e, j] = np.where(go_left, -w, w)  # still where it was: beside the new lane
        self.n_lane[e, j], self.n_s[e, j] = tgt, s_new
        self.n_next[e, j] = self._random_successor(tgt, self.rng)
        self.n_lc_wait[e, j] = 15.0

    # ---------------------------------------------------------------- ego
    def _ego_step(self, action: np.ndarray) -> None:
        cfg, dt = self.cfg, self.cfg.dt
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        steer = action[:, 0] * cfg.max_steer
        acc = np.where(action[:, 1] >= 0, action[:, 1] * cfg.max_accel, action[:, 1] * cfg.max_brake)
        lr = cfg.wheelbase / 2.0
        beta = np.arctan(0.5 * np.tan(steer))
        v_new = np.clip(self.v + acc * dt, 0.0, cfg.max_speed)
        v_mid = 0.5 * (self.v + v_new)
        self.x = self.x + v_mid * np.cos(self.yaw + beta) * dt
        self.y = self.y + v_mid * np.sin(self.yaw + beta) * dt
        self.yaw = wrap_angle(self.yaw + v_mid / lr * np.sin(beta) * dt)
        self.distance = self.distance + v_mid * dt
        self.v = v_new
        self.prev_steer = self.last_action[:, 0].astype(np.float64)
        self.last_action = action.astype(np.float32)

    # ---------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> StepResult:
        """Advance all envs by one step with ego actions [N, 2] = [steer, accel] in [-1, 1]."""
        yaw0, v0 = self.yaw.copy(), self.v.copy()
        self._advance(action)
        return self._measure(yaw0, v0)

    def _advance(self, action: np.ndarray) -> None:
        """Move traffic and ego by one step (backends replace this)."""
        self._traffic_step()
        self._pedestrian_step()
        self._ego_step(action)
        self.t = self.t + self.cfg.dt
        self.steps += 1

    def _measure(self, yaw0: np.ndarray, v0: np.ndarray) -> StepResult:
        """Route progress and infractions after a step, from the ego's previous yaw and speed."""
        cfg, m, pool, dt = self.cfg, self.map, self.pool, self.cfg.dt
        n = self.num_envs
        r = self.route
        s_prev = self.s
        s, lat, seg = project_on_routes(pool, r, s_prev, self.x, self.y)
        finished = s >= pool.length[r] - cfg.finish_tolerance
        s = np.where(finished, pool.length[r], s)
        self.s, self.lateral, self.seg = s, lat, seg
        progress_pct = 100.0 * (s - s_prev) / pool.length[r]
        heading_error = wrap_angle(self.yaw - pool.heading[r, seg])
        speed_limit = pool.speed_limit[r, seg]
        lane_width = m.lane_width[pool.point_lane[r, seg]]

        # Collisions with traffic: full box test only for pairs that are close enough to touch.
        diag = 0.5 * np.hypot(self.length, self.width)[:, None] + 0.5 * np.hypot(self.n_len, self.n_wid)
        d2 = (self.nx - self.x[:, None]) ** 2 + (self.ny - self.y[:, None]) ** 2
        near_e, near_k = np.nonzero(d2 < diag * diag)
        coll = np.zeros(n, bool)
        if len(near_e):
            hit = boxes_overlap(self.x[near_e], self.y[near_e], self.yaw[near_e], self.length[near_e],
                                self.width[near_e], self.nx[near_e, near_k], self.ny[near_e, near_k],
                                self.nyaw[near_e, near_k], self.n_len[near_e, near_k], self.n_wid[near_e, near_k])
            coll[near_e[hit]] = True

        coll_ped = self._ego_hits(self.px, self.py, self.pyaw, self.p_size, self.p_size)
        coll_static = self._ego_hits(self.ox, self.oy, self.oyaw, self.olen, self.owid)

        # Off-road: share of a 5 x 3 grid of points on the ego box outside the drivable area.
        gx, gy = _BOX_GRID
        c, sn = np.cos(self.yaw), np.sin(self.yaw)
        lx = gx[None, :] * self.length[:, None]
        ly = gy[None, :] * self.width[:, None]
        px = self.x[:, None] + c[:, None] * lx - sn[:, None] * ly
        py = self.y[:, None] + sn[:, None] * lx + c[:, None] * ly
        town = self.town[:, None]
        outside = (m.signed_distance(town, px, py) > 0).mean(1)
        off_road = outside >= cfg.offroad_share

        cw = m.carriageway_at(self.town, self.x, self.y)
        in_route_cw = pool.carriageway_mask[r, np.maximum(cw, 0)]
        outside_lanes = (cw == -1) | ((cw >= 0) & ~in_route_cw)

        # Red light: the ego's projection crossed a stop line of its route while that light was red.
        stop_s = pool.stop_s[r]
        crossed = (s_prev[:, None] < stop_s) & (s[:, None] >= stop_s)
        red = np.zeros(n, bool)
        if crossed.any():
            st = self.light_states(np.where(crossed, pool.stop_light[r], -1))
            red = (crossed & (st == LIGHT_RED)).any(1)
        # Stop sign: crossed a stop sign's line without having stood still in the zone before it.
        crossed_any = crossed.any(1)
        stop_sign = (crossed & (pool.stop_control[r] == CONTROL_STOP)).any(1) & ~self.stop_done
        self.stop_done &= ~crossed_any
        j, has = self._next_entry()
        rows = np.arange(n)
        front = np.where(has, stop_s[rows, j] - s - self.length / 2.0, np.inf)
        self.stop_done |= (has & (pool.stop_control[r, j] == CONTROL_STOP) & (self.v < cfg.blocked_speed)
                           & (front < cfg.stop_zone_m))

        deviation = lat > cfg.route_deviation_m
        self.blocked_t = np.where(self.v < cfg.blocked_speed, self.blocked_t + dt, 0.0)
        blocked = self.blocked_t >= cfg.blocked_s - 1e-9
        timeout = (self.t >= self.time_limit - 1e-9) & ~finished

        # Time to collision: constant-velocity boxes overlap within the horizons while the ego moves.
        ttc = np.zeros(n, bool)
        moving = self.v > cfg.blocked_speed
        for tau in cfg.ttc_horizons:
            ex = self.x + self.v * np.cos(self.yaw) * tau
            ey = self.y + self.v * np.sin(self.yaw) * tau
            ox = self.nx + self.n_v * np.cos(self.nyaw) * tau
            oy = self.ny + self.n_v * np.sin(self.nyaw) * tau
            dd = (ox - ex[:, None]) ** 2 + (oy - ey[:, None]) ** 2
            ce, ck = np.nonzero((dd < diag * diag) & moving[:, None])
            if len(ce):
                hit = boxes_overlap(ex[ce], ey[ce], self.yaw[ce], self.length[ce], self.width[ce], ox[ce, ck],
                                    oy[ce, ck], self.nyaw[ce, ck], self.n_len[ce, ck], self.n_wid[ce, ck])
                ttc[ce[hit]] = True

        # Comfort: finite differences of the ego motion.
        yaw_rate = wrap_angle(self.yaw - yaw0) / dt
        lon_acc = (self.v - v0) / dt
        lat_acc = self.v * yaw_rate
        first = self.steps == 1
        yaw_acc = np.where(first, 0.0, (yaw_rate - self.prev_yaw_rate) / dt)
        lon_jerk = np.where(first, 0.0, (lon_acc - self.prev_lon_acc) / dt)
        jerk = np.where(first, 0.0, np.hypot(lon_acc - self.prev_lon_acc, lat_acc - self.prev_lat_acc) / dt)
        comfort = comfort_violations(lon_acc, lat_acc, yaw_rate, yaw_acc, lon_jerk, jerk)
        self.prev_yaw_rate, self.prev_lon_acc, self.prev_lat_acc = yaw_rate, lon_acc, lat_acc

        infr = {
            "collision_vehicle": coll, "collision_static": coll_static, "collision_pedestrian": coll_ped,
            "red_light": red, "stop_sign": stop_sign, "off_road": off_road, "route_deviation": deviation,
            "blocked": blocked, "timeout": timeout,
        }
        terminated = coll | coll_static | coll_ped | red | stop_sign | off_road | deviation | blocked | timeout
        finished = finished & ~terminated
        return StepResult(progress_pct, s / pool.length[r], lat, heading_error, speed_limit, lane_width,
                          outside_lanes, ttc, comfort, infr, terminated, finished)

    def _ego_hits(self, x, y, yaw, length, width) -> np.ndarray:
        """Whether the ego's box overlaps any of the boxes [N, B], per env."""
        n = self.num_envs
        length, width = np.broadcast_to(length, x.shape), np.broadcast_to(width, x.shape)
        diag = 0.5 * np.hypot(self.length, self.width)[:, None] + 0.5 * np.hypot(length, width)
        d2 = (x - self.x[:, None]) ** 2 + (y - self.y[:, None]) ** 2
        near_e, near_k = np.nonzero(d2 < diag * diag)
        hit_env = np.zeros(n, bool)
        if len(near_e):
            hit = boxes_overlap(self.x[near_e], self.y[near_e], self.yaw[near_e], self.length[near_e],
                                self.width[near_e], x[near_e, near_k], y[near_e, near_k], yaw[near_e, near_k],
                                length[near_e, near_k], width[near_e, near_k])
            hit_env[near_e[hit]] = True
        return hit_env

    # ---------------------------------------------------------------- hazards along the route
    def route_hazards(self):
        """What the ego must not run into along its route: (obstacle gap, its speed along the route,
        stop gap, light state of the next junction entry).

        Obstacle gap, bumper to the nearest of: a vehicle whose box comes within half the ego's width
        (plus 0.5 m) of a route point in the next ``hazard_window`` points; a pedestrian on the road whose
        position now or in 1 or 2 s (constant velocity) comes within half the ego's width plus 0.8 m of
        one; a static obstacle too wide to pass within the lane. Stop gap: bumper to the next junction
        entry's stop line when the ego must stop there (its light is red or yellow, a stop sign not yet
        stood at, or the right of way says wait), inf otherwise. Light state: -1 when unsignalled or none.
        """
        cfg, pool = self.cfg, self.pool
        r = self.route
        w = cfg.hazard_window
        n = self.num_envs
        rows = np.arange(n)
        raw = self.seg[:, None] + np.arange(w)[None, :]
        last = (pool.n[r] - 1)[:, None]
        idx = np.minimum(raw, last)
        sp = pool.spacing[r]
        # Past the route's end the path goes straight on: what stands there is still in the way.
        end_h = pool.heading[r, last[:, 0]][:, None]
        beyond = np.maximum(raw - last, 0) * sp[:, None]
        rp = pool.pts[r[:, None], idx] + np.stack([np.cos(end_h) * beyond, np.sin(end_h) * beyond], -1)  # [N, W, 2]
        idx = raw
        vgap, vspeed = np.full(n, np.inf), np.zeros(n)
        if cfg.n_npcs:
            d = point_box_distance(rp[:, None, :, 0], rp[:, None, :, 1], self.nx[:, :, None], self.ny[:, :, None],
                                   self.nyaw[:, :, None], self.n_len[:, :, None], self.n_wid[:, :, None])
            hit = d < self.width[:, None, None] / 2.0 + 0.5
            first = np.where(hit.any(2), hit.argmax(2), w)  # [N, K]
            route_s = (idx[rows[:, None], np.minimum(first, w - 1)]) * sp[:, None]
            gap = np.where(first < w, route_s - self.s[:, None] - self.length[:, None] / 2.0, np.inf)
            gap = np.maximum(gap, 0.0)
            kbest = np.argmin(gap, 1)
            vgap = gap[rows, kbest]
            rh = pool.heading[r, np.minimum(idx[rows, np.minimum(first[rows, kbest], w - 1)], last[:, 0])]
            vspeed = np.maximum(self.n_v[rows, kbest] * np.cos(self.nyaw[rows, kbest] - rh), 0.0)
            # Vehicles about to cut in (merging, changing lanes, turning in): where the ego would be along
            # its route in tau seconds (at 2 m/s at least) against where each vehicle would be.
            ve = np.maximum(self.v, 2.0)
            nvx, nvy = self.n_v * np.cos(self.nyaw), self.n_v * np.sin(self.nyaw)
            for tau in (0.5, 1.0, 1.5, 2.0):
                i = np.minimum(self.seg + np.ceil(ve * tau / sp).astype(np.int64), w - 1 + self.seg) - self.seg
                ex, ey = rp[rows, i, 0], rp[rows, i, 1]
                eh = pool.heading[r, np.minimum(self.seg + i, last[:, 0])]
                qx, qy = self.nx + nvx * tau, self.ny + nvy * tau
                hit = boxes_overlap(ex[:, None], ey[:, None], eh[:, None], self.length[:, None] + 1.0,
                                    self.width[:, None] + 0.6, qx, qy, self.nyaw, self.n_len, self.n_wid)
                cg = np.where(hit, np.maximum(ve[:, None] * tau - self.length[:, None] / 2.0 - self.n_len / 2.0, 0.0),
                              np.inf)
                kc = np.argmin(cg, 1)
                g_c = cg[rows, kc]
                closer = g_c < vgap
                vgap = np.where(closer, g_c, vgap)
                vspeed = np.where(closer, np.maximum(self.n_v[rows, kc] * np.cos(self.nyaw[rows, kc] - eh), 0.0), vspeed)
        if cfg.n_pedestrians:
            walking = self._walking() & (self.p_halt_by != cfg.n_npcs)
            pvx, pvy = self.pv * np.cos(self.pyaw), self.pv * np.sin(self.pyaw)
            for tau in (0.0, 1.0, 2.0):
                qx = np.where(walking, self.px + pvx * tau, 1e6)
                qy = np.where(walking, self.py + pvy * tau, 1e6)
                d2 = (rp[:, None, :, 0] - qx[:, :, None]) ** 2 + (rp[:, None, :, 1] - qy[:, :, None]) ** 2
                reach = self.width / 2.0 + 0.8 + cfg.pedestrian_size / 2.0
                hit = (d2 < (reach * reach)[:, None, None]).any(1)  # [N, W]
                first = np.where(hit.any(1), hit.argmax(1), w)
                pg = np.where(first < w, idx[rows, np.minimum(first, w - 1)] * sp - self.s - self.length / 2.0 - 1.0,
                              np.inf)
                pg = np.maximum(pg, 0.0)
                closer = pg < vgap
                vgap = np.where(closer, pg, vgap)
                vspeed = np.where(closer, 0.0, vspeed)
        ob_s = pool.obstacle_s[r]
        present = np.isfinite(ob_s[..., 0])
        need = self._obstacle_shift(np.where(present, 0, -1), self.width[:, None] / 2.0, pool.obstacle_edge[r])
        blocking = present & (np.abs(need) > cfg.max_shift) & (ob_s[..., 1] > self.s[:, None])
        og = np.where(blocking, np.maximum(ob_s[..., 0] - self.s[:, None] - self.length[:, None] / 2.0 - 1.0, 0.0),
                      np.inf).min(1)
        vspeed = np.where(og < vgap, 0.0, vspeed)
        vgap = np.minimum(vgap, og)
        return (vgap, vspeed) + self._stop_hazard()

    def _stop_hazard(self):
        """(stop gap, light state) of the ego's next junction entry (see :meth:`route_hazards`)."""
        cfg, m, pool, r = self.cfg, self.map, self.pool, self.route
        rows = np.arange(self.num_envs)
        j, has = self._next_entry()
        light = np.where(has, pool.stop_light[r, j], -1)
        state = self.light_states(light)
        conn = np.where(has, pool.stop_lane[r, j], 0)
        ctl = np.where(has, pool.stop_control[r, j], CONTROL_NONE)
        gap = pool.stop_s[r, j] - self.s - self.length / 2.0
        hold = has & ((state == LIGHT_RED) | (state == LIGHT_YELLOW) | ((ctl == CONTROL_STOP) & ~self.stop_done))
        decide = (has & ~hold & (m.lane_foe[conn, 0] >= 0) & (state != LIGHT_GREEN) & (gap < 40.0)
                  & (gap > self.v * self.v / (2.0 * cfg.max_brake)))
        if decide.any():
            e = np.flatnonzero(decide)
            hold[e] = self._must_yield(e, conn[e], self._junction_states())
        return np.where(hold, gap, np.inf), state

    def next_junction(self):
        """(connector, control, light state, front bumper to its stop line, whether the ego may enter now)
        of every ego's next junction entry, arrays [N]; connector -1 and distance inf when none."""
        pool, r = self.pool, self.route
        j, has = self._next_entry()
        gap, state = self._stop_hazard()
        conn = np.where(has, pool.stop_lane[r, j], -1)
        ctl = np.where(has, pool.stop_control[r, j], CONTROL_NONE)
        dist = np.where(has, pool.stop_s[r, j] - self.s - self.length / 2.0, np.inf)
        return conn, ctl, state, dist, ~np.isfinite(gap)


def idm_accel(v, v0, gap, lead_v, cfg: SimConfig) -> np.ndarray:
    """Intelligent Driver Model acceleration (free road when ``gap`` is inf)."""
    dv = v - lead_v
    s_star = cfg.idm_min_gap + np.maximum(0.0, v * cfg.idm_time_headway + v * dv / (2.0 * np.sqrt(cfg.idm_accel * cfg.idm_brake)))
    free = 1.0 - (v / v0) ** 4
    inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.05)) ** 2, 0.0)
    return cfg.idm_accel * (free - inter)


_gx, _gy = np.meshgrid(np.linspace(-0.5, 0.5, 5), np.linspace(-0.5, 0.5, 3))
_BOX_GRID = (_gx.ravel(), _gy.ravel())
