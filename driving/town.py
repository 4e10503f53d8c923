"""Procedural towns: a jittered grid of junctions joined by two-way multi-lane roads, with lights.

Every road of one grid row (or column) has the same number of lanes per direction, so straight
connections through a junction always continue lane by lane; left turns leave from the leftmost
lane and right turns from the rightmost. Junctions with three or more roads get a traffic light
per approach, served one approach after the other (green, yellow, all-red), so vehicles that obey
the lights never cross paths inside a junction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steer.driving.geometry import cubic_bezier, wrap_angle
from steer.driving.roadmap import (
    CONNECTOR_LANE, LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW, ROAD_LANE, LaneSpec, LightSpec, RoadMap, build_roadmap,
)


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
    """Extra half-size of a junction beyond its widest road, metres; sets the turn radii."""
    green_s: float = 8.0
    """Green time per approach, seconds."""
    yellow_s: float = 3.0
    """Yellow time per approach, seconds."""
    all_red_s: float = 2.0
    """All-red clearance after each approach, seconds."""


def generate_town(seed: int, cfg: TownConfig = TownConfig()) -> RoadMap:
    """Generate a town from a seed; the same seed and config always give the same map."""
    lanes, lights, polys = town_specs(seed, cfg)
    return build_roadmap(lanes, lights, polys)


def town_specs(seed: int, cfg: TownConfig = TownConfig()):
    """The lane, light and junction-polygon specs of a town (see :func:`generate_town`)."""
    rng = np.random.default_rng(seed)
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

    half = np.zeros(n_j)
    for a, b, n in roads:
        half[a] = max(half[a], n * cfg.lane_width + cfg.junction_margin)
        half[b] = max(half[b], n * cfg.lane_width + cfg.junction_margin)

    lanes: list[LaneSpec] = []
    incoming: dict[int, list[tuple[int, list[int]]]] = {j: [] for j in range(n_j)}  # junction -> (cw, lanes)
    outgoing: dict[int, list[tuple[int, list[int]]]] = {j: [] for j in range(n_j)}
    cw_speed = {}
    for r, (a, b, n) in enumerate(roads):
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

    lights: list[LightSpec] = []
    polys = []
    group = 0
    for j in range(n_j):
        h = half[j]
        c = centres[j]
        polys.append(np.array([c + [-h, -h], c + [h, -h], c + [h, h], c + [-h, h]]))
        ins = incoming[j]
        degree = len(ins)
        light_of = {}
        if degree >= 3:
            # Serve approaches in order of their heading so the cycle goes round the junction.
            order = sorted(range(degree), key=lambda i: _heading(lanes[ins[i][1][0]].points))
            slot = cfg.green_s + cfg.yellow_s + cfg.all_red_s
            cycle = degree * slot
            for p_idx, i in enumerate(order):
                before = p_idx * slot
                durs, states = [], []
                if before > 0:
                    durs.append(before)
                    states.append(LIGHT_RED)
                durs += [cfg.green_s, cfg.yellow_s]
                states += [LIGHT_GREEN, LIGHT_YELLOW]
                rest = cycle - before - cfg.green_s - cfg.yellow_s
                durs.append(rest)
                states.append(LIGHT_RED)
                light_of[i] = len(lights)
                lights.append(LightSpec(group, durs, states, name=f"j{j}_a{p_idx}"))
            group += 1
        for i, (cw_in, in_ids) in enumerate(ins):
            h_in = _heading(lanes[in_ids[0]].points)
            for cw_out, out_ids in outgoing[j]:
                if cw_out // 2 == cw_in // 2:
                    continue  # no U-turns
                h_out = _heading(lanes[out_ids[0]].points)
                turn = float(wrap_angle(h_out - h_in))
                n_in, n_out = len(in_ids), len(out_ids)
                if degree <= 2 or abs(turn) < np.radians(30):
                    pairs = [(k, min(k, n_out - 1)) for k in range(n_in)]
                elif turn > 0:
                    pairs = [(0, 0)]
                else:
                    pairs = [(n_in - 1, n_out - 1)]
                for k_in, k_out in pairs:
                    li, lo_ = in_ids[k_in], out_ids[k_out]
                    p0, p1 = lanes[li].points[-1], lanes[lo_].points[0]
                    d0 = np.array([np.cos(h_in), np.sin(h_in)])
                    d1 = np.array([np.cos(h_out), np.sin(h_out)])
                    handle = 0.39 * np.linalg.norm(p1 - p0) if abs(turn) > np.radians(30) else None
                    pts = cubic_bezier(p0, d0, p1, d1, n=24, handle=handle)
                    idx = len(lanes)
                    lanes.append(LaneSpec(pts, cfg.lane_width, min(cw_speed[cw_in], cw_speed[cw_out]),
                                          successors=[lo_], kind=CONNECTOR_LANE, light=light_of.get(i, -1),
                                          name=f"j{j}_{lanes[li].name}->{lanes[lo_].name}"))
                    lanes[li].successors.append(idx)
    return lanes, lights, polys


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
