"""Procedural towns: a jittered grid of junctions joined by two-way multi-lane roads, with road users' places.

Every road of one grid row (or column) has the same number of lanes per direction, so straight
connections through a junction always continue lane by lane; left turns leave from the leftmost
lane and right turns from the rightmost. A junction with three or more roads is signalled, a
stop junction or a priority junction (drawn per junction). Signalled junctions serve their approaches
one after the other (green, yellow, all-red) or, at some four-way junctions, opposite approaches
together with permissive left turns (SUMO's ``g``: turn after yielding to oncoming traffic). At stop
and priority junctions the straightest pair of roads is the priority road; the other approaches
stop (stop sign) or yield (yield sign), and right of way inside the junction is derived by
:func:`~steer.driving.roadmap.derive_right_of_way`. Marked crosswalks lie across junction arms just
inside the junction (where there is room between the stop line and the crossing road), unmarked
crossings in the middle of some roads, and some roads have a parked car or road works standing
partly in their rightmost lane. Junction sizes are drawn per junction, from compact (the crossing
road 1 m past the stop line, as on SUMO's networks) to wide (5 m), so that a driver learns to stop
at the line and not at a fixed distance before the crossing road.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steer.driving.geometry import cubic_bezier, wrap_angle
from steer.driving.roadmap import (
    CONNECTOR_LANE, CONTROL_STOP, CONTROL_YIELD, LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED, LIGHT_YELLOW,
    OBSTACLE_PARKED_CAR, OBSTACLE_ROAD_WORKS, ROAD_LANE, CrossingSpec, LaneSpec, LightSpec, ObstacleSpec, RoadMap,
    build_roadmap,
)


CROSSWALK_ROOM = 3.5
"""Junction margin (m) a marked crosswalk needs: it lies 0.5-3.5 m past the stop line, clear of the
crossing road; more compact junctions have none."""


@dataclass(frozen=True)
class TownConfig:
    """Parameters of the procedural town generator."""

    nx: int = 3
    """Junctions along x."""
    ny: int = 3
    """Junctions along y."""
    block_min: float = 60.0
    """Shortest distance between neighbouring junction centres, metres."""
    block_max: float = 90.0
    """Longest distance between neighbouring junction centres, metres."""
    lane_choices: tuple[int, ...] = (1, 2)
    """Lanes per direction, drawn per grid row and column."""
    lane_width: float = 3.5
    """Lane width, metres."""
    speed_limits: tuple[float, ...] = (8.33, 11.11, 13.89)
    """Speed limits drawn per road, m/s (30, 40, 50 km/h)."""
    drop_road_prob: float = 0.15
    """Probability of removing a road (kept when it would disconnect the town or leave a dead end)."""
    junction_margin: float = 5.0
    """Extra half-size of a junction beyond its widest road, metres; sets the turn radii and how far
    the crossing roads lie past the stop line."""
    junction_margin_min: float | None = 1.0
    """With a value, each junction's margin is drawn uniformly between this and ``junction_margin``
    (real maps range from compact junctions, as SUMO's, to wide ones); None: every junction has
    ``junction_margin``."""
    green_s: float = 8.0
    """Green time per approach, seconds."""
    green_s_max: float | None = None
    """With a value, each signalled junction's green time is drawn uniformly between ``green_s`` and
    this (SUMO's default programs give 31 s, with longer queues); None: every junction has ``green_s``."""
    yellow_s: float = 3.0
    """Yellow time per approach, seconds."""
    all_red_s: float = 2.0
    """All-red clearance after each approach, seconds."""
    light_prob: float = 0.5
    """Share of junctions with three or more roads that are signalled ..."""
    stop_prob: float = 0.25
    """... that have stop signs on the minor roads (the rest: yield signs on the minor roads)."""
    paired_prob: float = 0.5
    """Share of signalled four-way junctions that serve opposite approaches together, left turns
    permissive (the others serve one approach at a time)."""
    crosswalk_prob: float = 0.5
    """Probability of a marked crosswalk across each arm of a junction with three or more roads."""
    midblock_crossing_prob: float = 0.3
    """Probability of an unmarked crossing in the middle of a road."""
    parked_car_prob: float = 0.15
    """Probability that a road has a car parked partly in its rightmost lane (one direction)."""
    road_works_prob: float = 0.1
    """Probability that a road has road works partly in its rightmost lane (one direction; at most one
    obstacle per road, so vehicles passing it never meet another vehicle passing one from the other side)."""


def generate_town(seed: int, cfg: TownConfig = TownConfig()) -> RoadMap:
    """Generate a town from a seed; the same seed and config always give the same map."""
    lanes, lights, polys, crossings, obstacles = town_specs(seed, cfg)
    return build_roadmap(lanes, lights, polys, crossings=crossings, obstacles=obstacles)


def town_specs(seed: int, cfg: TownConfig = TownConfig()):
    """The lane, light, junction-polygon, crossing and obstacle specs of a town (see :func:`generate_town`)."""
    rng = np.random.default_rng(seed)
    # Controls, crossings and obstacles draw from streams of their own: a seed's road layout stays the
    # same, and changing one of them leaves the others as they were.
    crng, prng, orng, mrng, grng = (np.random.default_rng([seed, k]) for k in (1, 2, 3, 4, 5))
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(cfg.block_min, cfg.block_max, cfg.nx - 1))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(cfg.block_min, cfg.block_max, cfg.ny - 1))])
    row_lanes = rng.choice(cfg.lane_choices, cfg.ny)
    col_lanes = rng.choice(cfg.lane_choices, cfg.nx)

    def jid(i, j):
        return j * cfg.nx + i

    centres = np.array([[xs[i], ys[j]] for j in range(cfg.ny) for i in range(cfg.nx)])
    roads = []  # (a, b, n_lanes)
    for j in range(cfg.ny):
        for i in range(cfg.nx - 1):
            roads.append((jid(i, j), jid(i + 1, j), int(row_lanes[j])))
    for i in range(cfg.nx):
        for j in range(cfg.ny - 1):
            roads.append((jid(i, j), jid(i, j + 1), int(col_lanes[i])))
    n_j = len(centres)
    keep = np.ones(len(roads), bool)
    for r in rng.permutation(len(roads)):
        if rng.random() >= cfg.drop_road_prob:
            continue
        keep[r] = False
        if not _connected_min_degree2(n_j, [roads[k] for k in np.flatnonzero(keep)]):
            keep[r] = True
    roads = [roads[k] for k in np.flatnonzero(keep)]
    speed = rng.choice(cfg.speed_limits, len(roads))

    if cfg.junction_margin_min is None:
        margin = np.full(n_j, cfg.junction_margin)
    else:
        if not 0.0 <= cfg.junction_margin_min <= cfg.junction_margin:
            raise ValueError(f"junction_margin_min {cfg.junction_margin_min} must lie in [0, junction_margin "
                             f"{cfg.junction_margin}].")
        margin = mrng.uniform(cfg.junction_margin_min, cfg.junction_margin, n_j)
    half = np.zeros(n_j)
    for a, b, n in roads:
        half[a] = max(half[a], n * cfg.lane_width + margin[a])
        half[b] = max(half[b], n * cfg.lane_width + margin[b])

    lanes: list[LaneSpec] = []
    crossings: list[CrossingSpec] = []
    obstacles: list[ObstacleSpec] = []
    incoming: dict[int, list[tuple[int, list[int]]]] = {j: [] for j in range(n_j)}  # junction -> (cw, lanes)
    outgoing: dict[int, list[tuple[int, list[int]]]] = {j: [] for j in range(n_j)}
    cw_speed = {}
    for r, (a, b, n) in enumerate(roads):
        dir_ids = []
        for d, (p, q) in enumerate(((a, b), (b, a))):
            cw = 2 * r + d
            u = centres[q] - centres[p]
            u /= np.linalg.norm(u)
            right = np.array([u[1], -u[0]])
            ids = []
            for k in range(n):
                o = (k + 0.5) * cfg.lane_width
                start = centres[p] + u * half[p] + right * o
                end = centres[q] - u * half[q] + right * o
                idx = len(lanes)
                lanes.append(LaneSpec(np.stack([start, end]), cfg.lane_width, float(speed[r]), kind=ROAD_LANE,
                                      carriageway=cw, name=f"road{r}_{'fb'[d]}_{k}"))
                ids.append(idx)
            for k, idx in enumerate(ids):
                lanes[idx].left = ids[k - 1] if k > 0 else -1
                lanes[idx].right = ids[k + 1] if k + 1 < n else -1
            outgoing[p].append((cw, ids))
            incoming[q].append((cw, ids))
            cw_speed[cw] = float(speed[r])
            dir_ids.append(ids)
        crossings += _midblock_crossing(prng, cfg, lanes[dir_ids[0][0]].points, n)
        obstacles += _road_obstacle(orng, cfg, [lanes[ids[-1]].points for ids in dir_ids])

    lights: list[LightSpec] = []
    polys = []
    group = 0
    for j in range(n_j):
        h = half[j]
        c = centres[j]
        polys.append(np.array([c + [-h, -h], c + [h, -h], c + [h, h], c + [-h, h]]))
        ins = incoming[j]
        degree = len(ins)
        head_in = [_heading(lanes[ids[0]].points) for _, ids in ins]
        light_of, left_light_of = {}, {}
        control_of, priority_of = {}, {}
        if degree >= 3:
            kind = crng.random()
            # The straightest pair of approaches (headings closest to parallel) is the priority road.
            pairs = [(abs(abs(float(wrap_angle(head_in[x] - head_in[y]))) - np.pi), x, y)
                     for x in range(degree) for y in range(x + 1, degree)]
            _, mx, my = min(pairs)
            if kind < cfg.light_prob:
                paired = degree == 4 and crng.random() < cfg.paired_prob and pairs and min(pairs)[0] < np.radians(30)
                green_s = cfg.green_s if cfg.green_s_max is None else float(grng.uniform(cfg.green_s, cfg.green_s_max))
                slot = green_s + cfg.yellow_s + cfg.all_red_s
                if paired:
                    # Two phases: the priority road's approaches, then the others; left turns permissive.
                    others = [x for x in range(degree) if x not in (mx, my)]
                    for p_idx, members in enumerate(((mx, my), tuple(others))):
                        for i in members:
                            for store, green in ((light_of, LIGHT_GREEN), (left_light_of, LIGHT_GREEN_YIELD)):
                                durs, states = _phase_plan(p_idx, 2, slot, green_s, cfg, green)
                                store[i] = len(lights)
                                lights.append(LightSpec(group, durs, states, name=f"j{j}_a{i}{'sl'[store is left_light_of]}"))
                else:
                    # Serve approaches in order of their heading so the cycle goes round the junction.
                    order = sorted(range(degree), key=lambda i: head_in[i])
                    for p_idx, i in enumerate(order):
                        durs, states = _phase_plan(p_idx, degree, slot, green_s, cfg, LIGHT_GREEN)
                        light_of[i] = left_light_of[i] = len(lights)
                        lights.append(LightSpec(group, durs, states, name=f"j{j}_a{p_idx}"))
                group += 1
            else:
                minor = CONTROL_STOP if kind < cfg.light_prob + cfg.stop_prob else CONTROL_YIELD
                for i in range(degree):
                    major = i in (mx, my)
                    priority_of[i] = 1 if major else 0
                    if not major:
                        control_of[i] = minor
            for cw_in, in_ids in ins:
                # A marked crosswalk needs room between the stop line and the crossing road.
                if prng.random() < cfg.crosswalk_prob and margin[j] >= CROSSWALK_ROOM:
                    crossings.append(_junction_crosswalk(lanes[in_ids[0]].points, c, h, len(in_ids), cfg))
        for i, (cw_in, in_ids) in enumerate(ins):
            h_in = head_in[i]
            for cw_out, out_ids in outgoing[j]:
                if cw_out // 2 == cw_in // 2:
                    continue  # no U-turns
                h_out = _heading(lanes[out_ids[0]].points)
                turn = float(wrap_angle(h_out - h_in))
                n_in, n_out = len(in_ids), len(out_ids)
                if degree <= 2 or abs(turn) < np.radians(30):
                    pairs_ = [(k, min(k, n_out - 1)) for k in range(n_in)]
                elif turn > 0:
                    pairs_ = [(0, 0)]
                else:
                    pairs_ = [(n_in - 1, n_out - 1)]
                left = turn > np.radians(30)
                for k_in, k_out in pairs_:
                    li, lo_ = in_ids[k_in], out_ids[k_out]
                    p0, p1 = lanes[li].points[-1], lanes[lo_].points[0]
                    d0 = np.array([np.cos(h_in), np.sin(h_in)])
                    d1 = np.array([np.cos(h_out), np.sin(h_out)])
                    handle = 0.39 * np.linalg.norm(p1 - p0) if abs(turn) > np.radians(30) else None
                    pts = cubic_bezier(p0, d0, p1, d1, n=24, handle=handle)
                    idx = len(lanes)
                    light = (left_light_of if left else light_of).get(i, -1)
                    lanes.append(LaneSpec(pts, cfg.lane_width, min(cw_speed[cw_in], cw_speed[cw_out]),
                                          successors=[lo_], kind=CONNECTOR_LANE, light=light,
                                          control=control_of.get(i, 0), junction=j, priority=priority_of.get(i, 0),
                                          name=f"j{j}_{lanes[li].name}->{lanes[lo_].name}"))
                    lanes[li].successors.append(idx)
    conn_pts = np.concatenate([ln.points for ln in lanes if ln.kind == CONNECTOR_LANE])
    crossings = [_clear_of_paths(c, conn_pts) for c in crossings]
    return lanes, lights, polys, crossings, obstacles


def _clear_of_paths(c: CrossingSpec, conn_pts: np.ndarray, room: float = 3.5) -> CrossingSpec:
    """Move a crossing's ends outwards until people waiting there stand clear of every junction path."""
    u = (c.b - c.a) / np.linalg.norm(c.b - c.a)
    a, b = c.a.copy(), c.b.copy()
    for _ in range(12):
        da = np.hypot(*(conn_pts - a).T).min()
        db = np.hypot(*(conn_pts - b).T).min()
        if da >= room and db >= room:
            break
        a = a - u * 0.5 * (da < room)
        b = b + u * 0.5 * (db < room)
    return CrossingSpec(a, b, c.marked, c.width)


def _phase_plan(p_idx: int, n_phases: int, slot: float, green_s: float, cfg: TownConfig, green: int):
    """(durations, states) of a light served in phase ``p_idx`` of ``n_phases`` equal slots."""
    before = p_idx * slot
    durs, states = ([before], [LIGHT_RED]) if before > 0 else ([], [])
    durs += [green_s, cfg.yellow_s, n_phases * slot - before - green_s - cfg.yellow_s]
    states += [green, LIGHT_YELLOW, LIGHT_RED]
    return durs, states


def _junction_crosswalk(in_points: np.ndarray, centre: np.ndarray, half: float, n_lanes: int,
                        cfg: TownConfig) -> CrossingSpec:
    """A marked crosswalk across the arm an incoming lane comes from, just inside the junction."""
    u = in_points[-1] - in_points[0]
    u /= np.linalg.norm(u)
    across = np.array([-u[1], u[0]])
    mid = centre - u * (half - 2.0)
    kerb = n_lanes * cfg.lane_width + 1.5
    return CrossingSpec(mid - across * kerb, mid + across * kerb, marked=True)


def _midblock_crossing(urng, cfg: TownConfig, lane_points: np.ndarray, n_lanes: int) -> list[CrossingSpec]:
    """An unmarked crossing somewhere in the middle of a road (given its first forward lane), or none."""
    if urng.random() >= cfg.midblock_crossing_prob:
        return []
    a, b = lane_points[0], lane_points[-1]
    u = (b - a) / np.linalg.norm(b - a)
    right = np.array([u[1], -u[0]])
    centre_line = a - right * 0.5 * cfg.lane_width  # the road's middle
    mid = centre_line + (b - a) * urng.uniform(0.3, 0.7)
    kerb = n_lanes * cfg.lane_width + 1.5
    return [CrossingSpec(mid - right * kerb, mid + right * kerb, marked=False)]


def _road_obstacle(urng, cfg: TownConfig, rightmost: list[np.ndarray]) -> list[ObstacleSpec]:
    """A parked car or road works standing partly in the rightmost lane of one direction, or none."""
    kind = urng.random()
    d = int(urng.integers(2))
    a, b = rightmost[d][0], rightmost[d][-1]
    length = float(np.linalg.norm(b - a))
    if kind >= cfg.parked_car_prob + cfg.road_works_prob or length < 50.0:
        return []
    u = (b - a) / length
    right = np.array([u[1], -u[0]])
    works = kind >= cfg.parked_car_prob
    ob_len, ob_wid, intrude = (6.0, 1.2, 1.1) if works else (4.5, 2.0, 1.0)
    # Centre: outside the lane's right edge by its width, pushed back in by how far it intrudes.
    off = cfg.lane_width / 2.0 + ob_wid / 2.0 - intrude
    # Far enough from the junction behind for a vehicle that just turned in to settle in its lane.
    centre = a + u * urng.uniform(25.0, length - 20.0) + right * off
    return [ObstacleSpec(float(centre[0]), float(centre[1]), float(np.arctan2(u[1], u[0])), ob_len, ob_wid,
                         OBSTACLE_ROAD_WORKS if works else OBSTACLE_PARKED_CAR)]


def _heading(points: np.ndarray) -> float:
    d = points[-1] - points[0]
    return float(np.arctan2(d[1], d[0]))


def _connected_min_degree2(n: int, roads) -> bool:
    deg = np.zeros(n, int)
    adj = [[] for _ in range(n)]
    for a, b, _ in roads:
        deg[a] += 1
        deg[b] += 1
        adj[a].append(b)
        adj[b].append(a)
    if deg.min() < 2:
        return False
    seen, stack = {0}, [0]
    while stack:
        for m in adj[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == n
