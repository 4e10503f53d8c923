"""The embedded driving simulator: numpy arrays over [envs] for the ego and [envs, npcs] for traffic.

Ego: kinematic bicycle (centre of gravity) at dt = 0.1 s driven by [steer, accel] in [-1, 1].
Traffic: vehicles on rails along lanes with IDM car-following, stopping at red (and stoppable
yellow) lights, choosing a random successor at each lane end. Per step the simulator measures route
completion (monotone windowed projection) and the infractions: vehicle collision (box overlap behind
a distance pre-filter), off-road (share of the box outside the drivable area by signed distance),
outside the route lanes, red light (crossing a stop line on red), route deviation, blocked, timeout.
Every public array has the env index first; nothing on the step path loops over envs in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from steer.driving.geometry import boxes_overlap, point_box_distance, wrap_angle
from steer.driving.roadmap import LIGHT_RED, LIGHT_YELLOW, RoadMap, merge_maps
from steer.driving.routes import RoutePool, make_pool, project_on_routes, random_route
from steer.driving.rewards import comfort_violations
from steer.driving.town import TownConfig, generate_town

INFRACTIONS = ("collision_vehicle", "collision_static", "collision_pedestrian", "red_light", "stop_sign",
               "off_road", "route_deviation", "blocked", "timeout")
"""Terminal infraction flags, in the order the infos report them. The generated towns have no
pedestrians, static obstacles or stop signs, so those three flags stay False there."""


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
    """... plus route length over this speed (m/s)."""
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


def world_from_map(m: RoadMap, n_routes: int, seed: int = 0, min_length: float = 100.0,
                   max_length: float = 400.0) -> tuple[RoadMap, RoutePool]:
    """A world over a given map (e.g. an imported network) with ``n_routes`` random routes."""
    rng = np.random.default_rng(seed)
    routes = [random_route(m, rng, 0, min_length, max_length) for _ in range(n_routes)]
    return m, make_pool(m, routes, [0] * n_routes)


def build_world(cfg: SimConfig) -> tuple[RoadMap, RoutePool]:
    """Generate the towns and the route pool of a config (deterministic in ``cfg.seed``)."""
    ss = np.random.SeedSequence(cfg.seed)
    town_seeds = ss.generate_state(cfg.n_towns)
    maps = [generate_town(int(s), cfg.town) for s in town_seeds]
    m = merge_maps(maps)
    rng = np.random.default_rng(ss.spawn(1)[0])
    routes, towns = [], []
    for t in range(cfg.n_towns):
        for _ in range(cfg.routes_per_town):
            routes.append(random_route(m, rng, t, cfg.route_min_length, cfg.route_max_length))
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
        # episode
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
        self.time_limit[idx] = cfg.timeout_base_s + pool.length[r] / cfg.timeout_speed
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
        x, y, h = m.lane_pose(self.n_lane[idx], self.n_s[idx])
        self.nx[idx], self.ny[idx], self.nyaw[idx] = x, y, h

    def _random_successor(self, lane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cnt = self.map.lane_succ_count[lane]
        pick = (rng.random(lane.shape) * cnt).astype(np.int64)
        nxt = self.map.lane_succ[lane, np.minimum(pick, self.map.lane_succ.shape[1] - 1)]
        # A lane without successors (edge of an imported network) keeps the vehicle on it.
        return np.where(cnt > 0, nxt, lane)

    # ---------------------------------------------------------------- lights
    def light_states(self, light: np.ndarray, env_axis_shape=None) -> np.ndarray:
        """State codes of ``light`` ids [N, ...] at each env's current time."""
        m = self.map
        li = np.maximum(light, 0)
        extra = (None,) * (light.ndim - 1)
        t = self.t[(slice(None),) + extra]
        grp = m.light_group[li]
        off = np.take_along_axis(self.group_offset, grp.reshape(len(grp), -1), axis=1).reshape(grp.shape)
        st = m.light_state(li, t, off)
        return np.where(light >= 0, st, -1)

    # ---------------------------------------------------------------- traffic
    def _traffic_step(self) -> None:
        cfg, m, dt = self.cfg, self.map, self.cfg.dt
        lane, s, v, nxt = self.n_lane, self.n_s, self.n_v, self.n_next
        length = m.lane_length[lane]
        rem = length - s
        # Desired speed: comfortable speed of this lane, and of the next one braking ahead of it.
        v_next = m.lane_comfort_speed[nxt]
        v0 = self.n_fac * np.minimum(m.lane_comfort_speed[lane], np.sqrt(v_next**2 + 2.0 * cfg.idm_brake * rem))
        v0 = np.maximum(v0, 0.5)
        # Leader on the same lane or on the chosen next lane.
        half = self.n_len / 2.0
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
        lon = dx * c[:, :, None] + dy * sn[:, :, None]
        lat = -dx * sn[:, :, None] + dy * c[:, :, None]
        k = self.cfg.n_npcs
        cosd = np.cos(oyaw[:, None, :] - self.nyaw[:, :, None])
        not_self = ~np.eye(k + 1, dtype=bool)[:k]
        is_ego = np.zeros(k + 1, bool)
        is_ego[-1] = True
        corridor = (lon > 0) & (lon < 40.0) & (np.abs(lat) < 2.2) & not_self & ((cosd > -0.7) | is_ego)
        cgap = np.where(corridor, lon - half[:, :, None] - olen[:, None, :] / 2.0, np.inf)
        cv = np.maximum(ov[:, None, :] * cosd, 0.0)
        all_gap = np.concatenate([gap, np.full(gap.shape[:2] + (1,), np.inf)], 2)
        all_v = np.concatenate([lead_v, np.zeros(gap.shape[:2] + (1,))], 2)
        all_gap = np.minimum(all_gap, cgap)
        all_v = np.where(cgap <= all_gap, cv, all_v)
        j = np.argmin(all_gap, axis=2)
        g = np.take_along_axis(all_gap, j[..., None], 2)[..., 0]
        lv = np.take_along_axis(all_v, j[..., None], 2)[..., 0]
        # Lights: a red (or a yellow one can still stop for) at the end of this lane is a standing leader.
        st = self.light_states(m.lane_light[nxt])
        stop_gap = rem - half - 1.0
        must_stop = (st == LIGHT_RED) | ((st == LIGHT_YELLOW) & (stop_gap > v * v / (2.0 * 3.0)))
        light_gap = np.where(must_stop & (stop_gap > -0.5), np.maximum(stop_gap, 0.05), np.inf)
        use_light = light_gap < g
        g = np.where(use_light, light_gap, g)
        lv = np.where(use_light, 0.0, lv)
        a = idm_accel(v, v0, g, lv, cfg)
        a = np.clip(a, -cfg.max_decel, cfg.idm_accel)
        v_new = np.maximum(v + a * dt, 0.0)
        s = s + 0.5 * (v + v_new) * dt
        v = v_new
        for _ in range(3):  # short connectors can be crossed in one step
            over = (s > m.lane_length[lane]) & (m.lane_succ_count[lane] > 0)
            if not over.any():
                break
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
        self.n_lane, self.n_s, self.n_v, self.n_next = lane, s, v, nxt
        self.nx, self.ny, self.nyaw = m.lane_pose(lane, s)

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

        falses = np.zeros(n, bool)
        infr = {
            "collision_vehicle": coll, "collision_static": falses, "collision_pedestrian": falses,
            "red_light": red, "stop_sign": falses, "off_road": off_road, "route_deviation": deviation,
            "blocked": blocked, "timeout": timeout,
        }
        terminated = coll | red | off_road | deviation | blocked | timeout
        finished = finished & ~terminated
        return StepResult(progress_pct, s / pool.length[r], lat, heading_error, speed_limit, lane_width,
                          outside_lanes, ttc, comfort, infr, terminated, finished)

    # ---------------------------------------------------------------- hazards along the route
    def route_hazards(self):
        """Obstacles on the ego's route ahead: (vehicle gap, vehicle speed along the route, light gap, light state).

        A vehicle is on the route where its box comes within half the ego's width (plus 0.5 m) of a
        route point in the next ``hazard_window`` points; gaps are bumper to box or stop line, metres.
        The light gap is to the next stop line on the route whose light is red or yellow (inf if none).
        """
        cfg, pool = self.cfg, self.pool
        r = self.route
        w = cfg.hazard_window
        n = self.num_envs
        if cfg.n_npcs == 0:
            vgap, vspeed = np.full(n, np.inf), np.zeros(n)
            return (vgap, vspeed) + self._light_hazard()
        idx = np.minimum(self.seg[:, None] + np.arange(w)[None, :], (pool.n[r] - 1)[:, None])
        rp = pool.pts[r[:, None], idx]  # [N, W, 2]
        d = point_box_distance(rp[:, None, :, 0], rp[:, None, :, 1], self.nx[:, :, None], self.ny[:, :, None],
                               self.nyaw[:, :, None], self.n_len[:, :, None], self.n_wid[:, :, None])
        hit = d < self.width[:, None, None] / 2.0 + 0.5
        first = np.where(hit.any(2), hit.argmax(2), w)  # [N, K]
        sp = pool.spacing[r]
        route_s = (idx[np.arange(n)[:, None], np.minimum(first, w - 1)]) * sp[:, None]
        gap = np.where(first < w, route_s - self.s[:, None] - self.length[:, None] / 2.0, np.inf)
        gap = np.maximum(gap, 0.0)
        kbest = np.argmin(gap, 1)
        rows = np.arange(n)
        vgap = gap[rows, kbest]
        rh = pool.heading[r, idx[rows, np.minimum(first[rows, kbest], w - 1)]]
        vspeed = np.maximum(self.n_v[rows, kbest] * np.cos(self.nyaw[rows, kbest] - rh), 0.0)
        return (vgap, vspeed) + self._light_hazard()

    def _light_hazard(self):
        pool, r, rows = self.pool, self.route, np.arange(self.num_envs)
        stop_s = pool.stop_s[r]
        ahead = stop_s > self.s[:, None]
        st = self.light_states(np.where(ahead & np.isfinite(stop_s), pool.stop_light[r], -1))
        j = np.argmax(ahead, 1)
        has = ahead.any(1)
        next_s = stop_s[rows, j]
        next_state = np.where(has, st[rows, j], -1)
        lgap = np.where(has & ((next_state == LIGHT_RED) | (next_state == LIGHT_YELLOW)),
                        next_s - self.s - self.length / 2.0, np.inf)
        return lgap, next_state


def idm_accel(v, v0, gap, lead_v, cfg: SimConfig) -> np.ndarray:
    """Intelligent Driver Model acceleration (free road when ``gap`` is inf)."""
    dv = v - lead_v
    s_star = cfg.idm_min_gap + np.maximum(0.0, v * cfg.idm_time_headway + v * dv / (2.0 * np.sqrt(cfg.idm_accel * cfg.idm_brake)))
    free = 1.0 - (v / v0) ** 4
    inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.05)) ** 2, 0.0)
    return cfg.idm_accel * (free - inter)


_gx, _gy = np.meshgrid(np.linspace(-0.5, 0.5, 5), np.linspace(-0.5, 0.5, 3))
_BOX_GRID = (_gx.ravel(), _gy.ravel())
