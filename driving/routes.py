"""Routes: A* over the lane graph, resampling to polylines with arc length, and route completion.

A route is a lane sequence (lane changes between same-direction neighbours are edges with a cost)
turned into one polyline resampled at uniform spacing (<= 1 m). It carries what the simulator and
the driver need along its arc length: the lane under each point, the speed limit, a comfortable
speed profile, the junction entries (stop lines) it crosses with their connectors, controls and lights,
and the static obstacles beside its path. Route completion is the arc length
of the ego's projection on the route, found in a window ahead of the last projection and never
decreasing (so a route that passes near itself cannot jump ahead). Routes never use a lane tighter
than the vehicle can turn (:func:`min_turn_radius`; e.g. the ~4.5 m turnarounds of SUMO networks).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from steer.driving.geometry import polyline_arclength, polyline_curvature, polyline_headings, project_to_segments
from steer.driving.roadmap import CONNECTOR_LANE, ROAD_LANE, RoadMap


@dataclass
class Route:
    """One route on a map (single-route view; the simulator uses :class:`RoutePool`)."""

    lanes: list[int]
    """Lane sequence, lane changes included."""
    points: np.ndarray
    """Polyline [n, 2] at uniform spacing."""
    s: np.ndarray
    """Arc length [n] of each point."""
    point_lane: np.ndarray
    """Lane under each point [n]."""
    point_lane_s: np.ndarray
    """Arc length along that lane [n]."""
    speed_limit: np.ndarray
    """Speed limit at each point [n], m/s."""
    comfort_speed: np.ndarray
    """Speed a careful driver may have at each point (curves and braking ahead of them), m/s."""
    stop_s: np.ndarray
    """Route arc length of each junction entry (stop line) the route crosses [k]."""
    stop_light: np.ndarray
    """Light controlling each of those stop lines [k] (-1 unsignalled)."""
    carriageways: np.ndarray
    """Carriageway ids the route drives on."""
    stop_lane: np.ndarray | None = None
    """Connector entered at each stop line [k]."""
    stop_control: np.ndarray | None = None
    """Control (CONTROL_*) of each stop line [k]."""
    obstacle: np.ndarray | None = None
    """Static obstacles standing on the route's lanes [b] ..."""
    obstacle_s: np.ndarray | None = None
    """... the route arc lengths [b, 2] where each begins and ends ..."""
    obstacle_edge: np.ndarray | None = None
    """... and the lateral offset from the route (left positive) of its side facing the route [b]."""

    @property
    def length(self) -> float:
        """Route length, metres."""
        return float(self.s[-1])


def min_turn_radius(wheelbase: float, max_steer: float, margin: float = 1.25) -> float:
    """Tightest lane radius (m) a kinematic bicycle with its centre of gravity mid-wheelbase can follow:
    its turning circle at full steer, lr / sin(atan(tan(max_steer) / 2)) (3.7 m for the default car),
    times ``margin`` (4.7 m): a driver tracking the lane needs steering left over, and at 4.1 m the
    scripted driver leaves SUMO's right turns 0.6-0.8 m wide, into traffic waiting on the other lane.
    Real cars turn no tighter than about 5 m."""
    beta = np.arctan(0.5 * np.tan(max_steer))
    return float(margin * 0.5 * wheelbase / np.sin(beta))


def astar_lanes(m: RoadMap, start: int, goal: int, lane_change_cost: float = 30.0,
                min_change_length: float = 30.0, min_radius: float = 0.0) -> list[int] | None:
    """Shortest lane sequence from lane ``start`` to lane ``goal`` (None if unreachable).

    Edges: successors (cost = length of the lane left) and lane changes to same-direction
    neighbours on lanes at least ``min_change_length`` long (cost ``lane_change_cost``). Lanes tighter
    than ``min_radius`` (m, see :func:`min_turn_radius`) are never entered.
    The heuristic is the straight-line distance from a lane's end to the goal's start (admissible).
    """
    goal_xy = m.pts[m.lane_offset[goal]]

    def h(lane: int) -> float:
        end = m.pts[m.lane_offset[lane] + m.lane_count[lane] - 1]
        return float(np.hypot(*(end - goal_xy)))

    g = {start: 0.0}
    parent = {start: -1}
    heap = [(h(start), 0.0, start)]
    closed = set()
    while heap:
        _, cost, lane = heapq.heappop(heap)
        if lane in closed:
            continue
        closed.add(lane)
        if lane == goal:
            seq = [lane]
            while parent[seq[-1]] >= 0:
                seq.append(parent[seq[-1]])
            return seq[::-1]
        nbrs = [(int(n), float(m.lane_length[lane])) for n in m.lane_succ[lane, : m.lane_succ_count[lane]]]
        # No lane change onto or off a lane with an obstacle: the route passes it along the lane.
        if (m.lane_kind[lane] == ROAD_LANE and m.lane_length[lane] >= min_change_length
                and m.lane_obstacle[lane] < 0):
            for n in (m.lane_left[lane], m.lane_right[lane]):
                # One lane change per road: do not change back onto a lane we came from.
                if n >= 0 and parent.get(lane) != n and m.lane_obstacle[n] < 0:
                    nbrs.append((int(n), lane_change_cost))
        for n, c in nbrs:
            if m.lane_min_radius[n] < min_radius:
                continue
            nc = cost + c
            if nc < g.get(n, np.inf):
                g[n] = nc
                parent[n] = lane
                heapq.heappush(heap, (nc + h(n), nc, n))
    return None


def _is_change(m: RoadMap, a: int, b: int) -> bool:
    return b == m.lane_left[a] or b == m.lane_right[a]


def build_route(m: RoadMap, lanes: list[int], s_start: float, s_goal: float, spacing: float = 1.0,
                change_length: float = 20.0, lateral_accel: float = 2.5, brake: float = 2.0) -> Route:
    """Turn a lane sequence into a :class:`Route` from ``s_start`` on the first lane to ``s_goal`` on the last.

    A lane change blends the two parallel lanes with a smoothstep over ``change_length`` metres (less
    on a short lane) in the middle of the stretch available.
    """
    xs, ys, ln_ids, ln_s = [], [], [], []
    starts_at = {}  # index in lanes -> index in the point list where that lane starts
    i = 0
    cur_s = s_start
    while i < len(lanes):
        lane = lanes[i]
        end_s = s_goal if i == len(lanes) - 1 else m.lane_length[lane]
        if i + 1 < len(lanes) and _is_change(m, lane, lanes[i + 1]):
            nxt = lanes[i + 1]
            last = i + 1 == len(lanes) - 1
            avail_end = s_goal if last else m.lane_length[lane]
            avail = max(avail_end - cur_s, 2.0)
            lc = min(change_length, 0.8 * avail)
            s_c = cur_s + 0.5 * (avail - lc)
            ss = np.arange(cur_s, s_c, 0.5)
            if len(ss):
                x, y, _ = m.lane_pose(np.full(len(ss), lane), ss)
                starts_at[i] = len(xs)
                xs += list(x); ys += list(y); ln_ids += [lane] * len(ss); ln_s += list(ss)
            else:
                starts_at[i] = len(xs)
            u = np.linspace(0.0, 1.0, max(int(lc / 0.5), 2))
            w = u * u * (3 - 2 * u)
            sb = s_c + u * lc
            xa, ya, _ = m.lane_pose(np.full(len(u), lane), sb)
            xb, yb, _ = m.lane_pose(np.full(len(u), nxt), sb)
            xs += list((1 - w) * xa + w * xb); ys += list((1 - w) * ya + w * yb)
            ln_ids += [lane if wi < 0.5 else nxt for wi in w]; ln_s += list(sb)
            starts_at[i + 1] = len(xs)
            cur_s = s_c + lc
            i += 1
            continue
        ss = np.arange(cur_s, end_s, 0.5)
        if i == len(lanes) - 1 or len(ss) == 0:
            ss = np.append(ss, end_s)
        starts_at.setdefault(i, len(xs))
        x, y, _ = m.lane_pose(np.full(len(ss), lane), ss)
        xs += list(x); ys += list(y); ln_ids += [lane] * len(ss); ln_s += list(ss)
        cur_s = 0.0
        i += 1
    dense = np.stack([xs, ys], 1)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(dense, axis=0), axis=1) > 1e-6])
    idx_map = np.flatnonzero(keep)
    dense = dense[keep]
    sd = polyline_arclength(dense)
    n = max(2, int(np.ceil(sd[-1] / spacing)) + 1)
    s = np.linspace(0.0, sd[-1], n)
    pts = np.stack([np.interp(s, sd, dense[:, 0]), np.interp(s, sd, dense[:, 1])], 1)
    near = np.clip(np.searchsorted(sd, s, side="right") - 1, 0, len(sd) - 1)
    point_lane = np.asarray(ln_ids)[idx_map][near]
    point_lane_s = np.asarray(ln_s)[idx_map][near]
    limit = m.lane_speed[point_lane]
    k = polyline_curvature(pts)
    k = np.convolve(np.pad(k, 3, mode="edge"), np.ones(7) / 7, mode="valid")
    v = np.minimum(limit, np.sqrt(lateral_accel / np.maximum(k, 1e-6)))
    ds = s[1] - s[0]
    for j in range(n - 2, -1, -1):
        v[j] = min(v[j], np.sqrt(v[j + 1] ** 2 + 2 * brake * ds))
    dense_s_of_lane = {}
    for li, pi in starts_at.items():
        j = np.searchsorted(idx_map, pi)
        dense_s_of_lane[li] = sd[min(j, len(sd) - 1)]
    stop_s, stop_light, stop_lane = [], [], []
    for li, lane in enumerate(lanes):
        # A junction entry: a connector entered from a road lane (or where the route starts).
        entry = m.lane_kind[lane] == CONNECTOR_LANE and (li == 0 or m.lane_kind[lanes[li - 1]] == ROAD_LANE)
        if entry and li in dense_s_of_lane and li > 0:
            stop_s.append(dense_s_of_lane[li])
            stop_light.append(int(m.lane_light[lane]))
            stop_lane.append(int(lane))
    ob, ob_s, ob_edge = [], [], []
    for lane in dict.fromkeys(lanes):
        o = m.lane_obstacle[lane]
        if o < 0:
            continue
        on = np.flatnonzero((point_lane == lane) & (point_lane_s >= m.obstacle_s0[o]) & (point_lane_s <= m.obstacle_s1[o]))
        if len(on):
            ob.append(int(o))
            ob_s.append((s[on[0]], s[on[-1]]))
            ob_edge.append(float(m.obstacle_edge[o]))
    cws = np.unique(m.lane_carriageway[[ln for ln in lanes if m.lane_kind[ln] == ROAD_LANE]])
    stop_lane = np.array(stop_lane, np.int64)
    return Route(list(lanes), pts, s, point_lane, point_lane_s, limit, v, np.array(stop_s), np.array(stop_light, np.int64),
                 cws[cws >= 0], stop_lane, m.lane_control[stop_lane].astype(np.int64), np.array(ob, np.int64),
                 np.array(ob_s, np.float64).reshape(-1, 2), np.array(ob_edge, np.float64))


def random_route(m: RoadMap, rng: np.random.Generator, town: int = 0, min_length: float = 150.0,
                 max_length: float = 500.0, tries: int = 200, min_radius: float = 0.0) -> Route:
    """A random route between road lanes of one town with length in [min_length, max_length], using no
    lane tighter than ``min_radius`` metres."""
    lo, cnt = m.town_lane_offset[town], m.town_lane_count[town]
    road = np.flatnonzero(m.lane_kind[lo : lo + cnt] == ROAD_LANE) + lo
    best = None
    for _ in range(tries):
        a, b = rng.choice(road, 2, replace=False)
        seq = astar_lanes(m, int(a), int(b), min_radius=min_radius)
        if seq is None:
            continue
        s0 = rng.uniform(3.0, 0.4 * m.lane_length[a])
        sg = rng.uniform(0.5, 0.9) * m.lane_length[b]
        if len(seq) == 1 and sg <= s0 + 5:
            continue
        if _near_obstacle(m, int(a), s0) or _near_obstacle(m, int(b), sg):
            continue  # neither start nor end beside a parked car or road works
        r = build_route(m, seq, s0, sg)
        if min_length <= r.length <= max_length:
            return r
        if best is None or abs(r.length - min_length) < abs(best.length - min_length):
            best = r
    if best is None:
        raise RuntimeError("no route found on this map")
    return best


def _near_obstacle(m: RoadMap, lane: int, s: float, margin: float = 8.0) -> bool:
    o = m.lane_obstacle[lane]
    return bool(o >= 0 and m.obstacle_s0[o] - margin < s < m.obstacle_s1[o] + margin)


@dataclass
class RoutePool:
    """Many routes as padded arrays [R, n_max] so that the simulator can index them by route id."""

    pts: np.ndarray
    s: np.ndarray
    n: np.ndarray
    length: np.ndarray
    spacing: np.ndarray
    heading: np.ndarray
    point_lane: np.ndarray
    point_lane_s: np.ndarray
    speed_limit: np.ndarray
    comfort_speed: np.ndarray
    stop_s: np.ndarray
    stop_light: np.ndarray
    stop_count: np.ndarray
    carriageway_mask: np.ndarray
    town: np.ndarray
    routes: list[Route]
    stop_lane: np.ndarray = None
    """[R, k] connector entered at each stop line (-1 padding)."""
    stop_control: np.ndarray = None
    """[R, k] its CONTROL_* code."""
    obstacle_s: np.ndarray = None
    """[R, b, 2] route arc lengths where each obstacle beside the route begins and ends (inf padding)."""
    obstacle_edge: np.ndarray = None
    """[R, b] lateral offset from the route (left positive) of the obstacle's side facing it."""

    @property
    def n_routes(self) -> int:
        """Number of routes."""
        return len(self.n)


def make_pool(m: RoadMap, routes: list[Route], towns: list[int]) -> RoutePool:
    """Pack routes (with the town each one lies in) into a :class:`RoutePool`."""
    r_n = len(routes)
    n_max = max(len(r.s) for r in routes)
    k_max = max(1, max(len(r.stop_s) for r in routes))
    pts = np.zeros((r_n, n_max, 2))
    s = np.zeros((r_n, n_max))
    heading = np.zeros((r_n, n_max))
    pl = np.zeros((r_n, n_max), np.int64)
    pls = np.zeros((r_n, n_max))
    lim = np.zeros((r_n, n_max))
    comf = np.zeros((r_n, n_max))
    stop_s = np.full((r_n, k_max), np.inf)
    stop_l = -np.ones((r_n, k_max), np.int64)
    stop_lane = -np.ones((r_n, k_max), np.int64)
    stop_ctl = np.zeros((r_n, k_max), np.int64)
    b_max = max(1, max(len(r.obstacle) for r in routes))
    ob_s = np.full((r_n, b_max, 2), np.inf)
    ob_edge = np.zeros((r_n, b_max))
    cwm = np.zeros((r_n, max(m.n_carriageways, 1)), bool)
    for i, r in enumerate(routes):
        k = len(r.s)
        # Pad by repeating the last point so windows past the end stay on the route.
        pts[i, :k], pts[i, k:] = r.points, r.points[-1]
        s[i, :k], s[i, k:] = r.s, r.s[-1]
        heading[i, :k] = polyline_headings(r.points)
        heading[i, k:] = heading[i, k - 1]
        pl[i, :k], pl[i, k:] = r.point_lane, r.point_lane[-1]
        pls[i, :k], pls[i, k:] = r.point_lane_s, r.point_lane_s[-1]
        lim[i, :k], lim[i, k:] = r.speed_limit, r.speed_limit[-1]
        comf[i, :k], comf[i, k:] = r.comfort_speed, r.comfort_speed[-1]
        stop_s[i, : len(r.stop_s)] = r.stop_s
        stop_l[i, : len(r.stop_light)] = r.stop_light
        stop_lane[i, : len(r.stop_lane)] = r.stop_lane
        stop_ctl[i, : len(r.stop_control)] = r.stop_control
        ob_s[i, : len(r.obstacle)] = r.obstacle_s
        ob_edge[i, : len(r.obstacle)] = r.obstacle_edge
        cwm[i, r.carriageways] = True
    return RoutePool(pts, s, np.array([len(r.s) for r in routes]), np.array([r.length for r in routes]),
                     np.array([r.s[1] - r.s[0] for r in routes]), heading, pl, pls, lim, comf, stop_s, stop_l,
                     np.array([len(r.stop_s) for r in routes]), cwm, np.asarray(towns, np.int64), routes,
                     stop_lane, stop_ctl, ob_s, ob_edge)


def project_on_routes(pool: RoutePool, route: np.ndarray, s_prev: np.ndarray, x: np.ndarray, y: np.ndarray,
                      window: int = 16):
    """Monotone windowed projection of points onto their routes (vectorized over envs).

    Looks at the ``window`` segments that start at the segment holding ``s_prev`` and returns
    (s, lateral distance, segment index): s never falls below ``s_prev``.
    """
    sp = pool.spacing[route]
    n = pool.n[route]
    i0 = np.minimum((s_prev / sp).astype(np.int64), np.maximum(n - 2, 0))
    idx = i0[:, None] + np.arange(window)[None, :]
    idx = np.minimum(idx, (n - 2)[:, None])
    a = pool.pts[route[:, None], idx]
    b = pool.pts[route[:, None], idx + 1]
    t, d2 = project_to_segments(x[:, None], y[:, None], a[..., 0], a[..., 1], b[..., 0], b[..., 1])
    j = np.argmin(d2, axis=1)
    rows = np.arange(len(route))
    seg = idx[rows, j]
    s_new = (seg + t[rows, j]) * sp
    s_new = np.minimum(np.maximum(s_new, s_prev), pool.length[route])
    return s_new, np.sqrt(d2[rows, j]), seg
