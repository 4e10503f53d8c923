"""The map format every backend shares: lanes, lane graph, traffic lights and rasterized layers.

A map is a set of directed lanes (centre polylines resampled at <= 1 m) with successors, lane-change
neighbours, speed limits and how entry into a junction connector is controlled: a traffic light, a
stop sign, a yield sign or nothing (the priority road), together with the connectors it conflicts
with and which of them it yields to (its right of way). Controls stand at the start of connector
lanes, i.e. at the stop line. Pedestrian crossings (marked crosswalks and unmarked places where people
cross) and static obstacles (parked cars, road works) are map features too. From those it derives the
static world layers the simulator and the rasterizer look up: signed distance to the drivable area,
carriageway ids (for "outside the route lanes") and the uint8 BEV layers road, lane markings, speed
limit, shoulder. Several maps merge into one bank with global indices so that a vector env can run a
different town in every sub-environment with the same flat arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steer.driving.geometry import polyline_arclength, polyline_curvature, polyline_headings, resample_polyline

LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED, LIGHT_GREEN_YIELD = 0, 1, 2, 3
"""Traffic light state codes. ``LIGHT_GREEN_YIELD`` is SUMO's permissive green ``g``: go after
yielding to the conflicting traffic that has a (protected or permissive) green of higher rank."""

CONTROL_NONE, CONTROL_LIGHT, CONTROL_STOP, CONTROL_YIELD = 0, 1, 2, 3
"""How entry into a connector is controlled: nothing (the priority road; the connector still yields to
the foes its right of way names), a traffic light, a stop sign (stop, then yield), a yield sign."""

CONTROL_NAMES = ("none", "light", "stop", "yield")
"""Names of the control codes, in code order."""

OBSTACLE_PARKED_CAR, OBSTACLE_ROAD_WORKS = 0, 1
"""Kinds of static obstacles."""

ROAD_LANE, CONNECTOR_LANE = 0, 1
"""Lane kinds: a lane of a road, or a connector through a junction."""

CW_OFFROAD, CW_JUNCTION = -1, -2
"""Carriageway grid values that are not a carriageway id."""

STATIC_LAYERS = ("road", "lane_markings", "speed_limit", "shoulder")
"""Channels of :attr:`RoadMap.static_layers`, in order."""

SPEED_LIMIT_SCALE = 30.0
"""Speed (m/s) that the speed-limit layer encodes as 255."""


@dataclass
class LaneSpec:
    """One directed lane as a map builder describes it."""

    points: np.ndarray
    """Centre line [n, 2] in driving direction, metres."""
    width: float
    """Lane width, metres."""
    speed_limit: float
    """Speed limit, m/s."""
    successors: list[int] = field(default_factory=list)
    """Lanes one may enter at this lane's end."""
    kind: int = ROAD_LANE
    """ROAD_LANE or CONNECTOR_LANE."""
    carriageway: int = -1
    """Id shared by the same-direction lanes of one road; -1 for connectors."""
    light: int = -1
    """Index of the light that controls entry into this lane (its stop line is the lane start); -1 none."""
    left: int = -1
    """Same-direction neighbour to the left (lane change), -1 none."""
    right: int = -1
    """Same-direction neighbour to the right, -1 none."""
    name: str = ""
    """Source id (e.g. a SUMO lane id), for debugging and backends."""
    control: int = CONTROL_NONE
    """Entry control of a connector (CONTROL_*); a connector with ``light >= 0`` is CONTROL_LIGHT."""
    junction: int = -1
    """Junction a connector belongs to (any id unique within the map); -1 for road lanes. Right of way
    is derived between the connectors of one junction."""
    priority: int = 0
    """Rank of a connector's approach: higher goes first (SUMO's edge priority). Derived right of way
    orders conflicting connectors by (priority, not stop/yield controlled, straight > right > left)."""
    foes: list[tuple[int, float, bool]] | None = None
    """Right of way of a connector: (foe connector, arc length along the foe where their paths meet,
    whether this connector yields to it). None derives it from geometry and the ranks above (see
    :func:`derive_right_of_way`); an importer with the source's own right of way passes it here."""


@dataclass
class CrossingSpec:
    """A place where pedestrians cross the road: a straight walk from ``a`` to ``b`` (both kerbside)."""

    a: np.ndarray
    """One end [2], beside the road, metres."""
    b: np.ndarray
    """The other end [2]."""
    marked: bool = True
    """A marked crosswalk (vehicles must let people on it cross) or a place people cross anyway."""
    width: float = 3.0
    """Width of the crosswalk, metres."""


@dataclass
class ObstacleSpec:
    """A static obstacle: an oriented box that stands on (part of) a lane."""

    x: float
    """Centre x, metres."""
    y: float
    """Centre y, metres."""
    yaw: float
    """Heading, radians."""
    length: float
    """Length, metres."""
    width: float
    """Width, metres."""
    kind: int = OBSTACLE_PARKED_CAR
    """OBSTACLE_PARKED_CAR or OBSTACLE_ROAD_WORKS."""


@dataclass
class LightSpec:
    """A traffic light signal: a cyclic schedule of states, coordinated with its group."""

    group: int
    """Lights of one junction share a group; the simulator draws one time offset per group."""
    durations: list[float]
    """Duration of each phase, seconds; the cycle is their sum."""
    states: list[int]
    """State code of each phase (LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED, LIGHT_GREEN_YIELD)."""
    name: str = ""
    """Source id (e.g. SUMO "tls:linkIndex")."""


@dataclass
class RoadMap:
    """A map (or a bank of merged maps) as flat arrays. Build with :func:`build_roadmap`."""

    # lanes [L]
    lane_offset: np.ndarray
    lane_count: np.ndarray
    lane_length: np.ndarray
    lane_spacing: np.ndarray
    lane_width: np.ndarray
    lane_speed: np.ndarray
    lane_comfort_speed: np.ndarray
    lane_kind: np.ndarray
    lane_light: np.ndarray
    lane_carriageway: np.ndarray
    lane_left: np.ndarray
    lane_right: np.ndarray
    lane_town: np.ndarray
    lane_succ: np.ndarray
    lane_succ_count: np.ndarray
    lane_names: list[str]
    lane_control: np.ndarray
    """[L] CONTROL_* of each lane (CONTROL_NONE on road lanes)."""
    lane_foe: np.ndarray
    """[L, F] foe connectors of each connector (-1 padding)."""
    lane_foe_s: np.ndarray
    """[L, F] arc length along the foe where the two paths meet."""
    lane_yields: np.ndarray
    """[L, F] whether the lane yields to that foe."""
    lane_obstacle: np.ndarray
    """[L] the static obstacle that stands on the lane, -1 none (one per lane)."""
    lane_min_radius: np.ndarray
    """[L] tightest radius of curvature along each lane (metres, over 3 m of arc): routes skip lanes
    tighter than the ego can turn."""
    # lane points [P]
    pts: np.ndarray
    pt_heading: np.ndarray
    # lights [Lt]
    light_group: np.ndarray
    light_phase_end: np.ndarray
    light_phase_state: np.ndarray
    light_cycle: np.ndarray
    light_names: list[str]
    n_groups: int
    # stop-line sample points for the rasterizer [S]
    stopline_pts: np.ndarray
    stopline_light: np.ndarray
    stopline_town: np.ndarray
    # spawn slots on road lanes [Q]
    slot_lane: np.ndarray
    slot_s: np.ndarray
    slot_xy: np.ndarray
    town_slot_offset: np.ndarray
    town_slot_count: np.ndarray
    # rasters [T, H, W]
    grid_origin: np.ndarray
    grid_res: float
    sdf: np.ndarray
    carriageway_grid: np.ndarray
    static_layers: np.ndarray
    n_carriageways: int
    town_lane_offset: np.ndarray
    town_lane_count: np.ndarray
    town_group_offset: np.ndarray
    town_group_count: np.ndarray
    # pedestrian crossings [C]
    crossing_a: np.ndarray
    crossing_b: np.ndarray
    crossing_marked: np.ndarray
    crossing_width: np.ndarray
    town_crossing_offset: np.ndarray
    town_crossing_count: np.ndarray
    # static obstacles [O]
    obstacle_xy: np.ndarray
    obstacle_yaw: np.ndarray
    obstacle_length: np.ndarray
    obstacle_width: np.ndarray
    obstacle_kind: np.ndarray
    obstacle_lane: np.ndarray
    """Lane the obstacle stands on (-1 when it is off every lane)."""
    obstacle_s0: np.ndarray
    """Arc length along that lane where the obstacle begins ..."""
    obstacle_s1: np.ndarray
    """... and ends, metres."""
    obstacle_edge: np.ndarray
    """Lateral offset (left positive) from the lane's centre line of the obstacle's side that faces it."""
    town_obstacle_offset: np.ndarray
    town_obstacle_count: np.ndarray

    @property
    def n_lanes(self) -> int:
        """Number of lanes."""
        return len(self.lane_offset)

    @property
    def n_lights(self) -> int:
        """Number of light signals."""
        return len(self.light_group)

    @property
    def n_towns(self) -> int:
        """Number of merged maps."""
        return len(self.sdf)

    def lane_points(self, lane: int) -> np.ndarray:
        """Centre-line points [n, 2] of one lane."""
        o = self.lane_offset[lane]
        return self.pts[o : o + self.lane_count[lane]]

    def lane_pose(self, lane: np.ndarray, s: np.ndarray):
        """Position and heading at arc length s along lanes (vectorized): (x, y, yaw)."""
        sp = self.lane_spacing[lane]
        f = np.clip(s, 0.0, self.lane_length[lane]) / sp
        i = np.minimum(f.astype(np.int64), self.lane_count[lane] - 2)
        frac = f - i
        g = self.lane_offset[lane] + i
        p0, p1 = self.pts[g], self.pts[g + 1]
        xy = p0 + (p1 - p0) * frac[..., None]
        return xy[..., 0], xy[..., 1], self.pt_heading[g]

    def light_state(self, light: np.ndarray, t: np.ndarray, group_offset: np.ndarray) -> np.ndarray:
        """State codes of lights at time t (seconds) given the per-group time offsets, broadcast."""
        cyc = self.light_cycle[light]
        tm = np.mod(t + group_offset, cyc)
        phase = (tm[..., None] >= self.light_phase_end[light]).sum(-1)
        phase = np.minimum(phase, self.light_phase_end.shape[1] - 1)
        return self.light_phase_state[light, phase]

    def grid_index(self, town: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat indices into the [T, H, W] rasters of world points (clamped to the raster border)."""
        _, h, w = self.sdf.shape
        ox, oy = self.grid_origin[town, 0], self.grid_origin[town, 1]
        ix = np.clip(((x - ox) / self.grid_res).astype(np.int64), 0, w - 1)
        iy = np.clip(((y - oy) / self.grid_res).astype(np.int64), 0, h - 1)
        return (town * h + iy) * w + ix

    def signed_distance(self, town, x, y) -> np.ndarray:
        """Signed distance (m) to the drivable area's edge: negative inside, positive outside."""
        return self.sdf.reshape(-1)[self.grid_index(town, x, y)]

    def carriageway_at(self, town, x, y) -> np.ndarray:
        """Carriageway id under world points, or CW_JUNCTION / CW_OFFROAD."""
        return self.carriageway_grid.reshape(-1)[self.grid_index(town, x, y)]


def _rasterize_strip(mask_set, pts: np.ndarray, offsets: np.ndarray, origin, res, shape, value=None):
    """Mark the cells under a strip: the polyline ``pts`` shifted sideways by each of ``offsets``."""
    dense = resample_polyline(pts, res * 0.5)
    h = polyline_headings(dense)
    nx, ny = -np.sin(h), np.cos(h)
    px = dense[:, 0][:, None] + nx[:, None] * offsets[None, :]
    py = dense[:, 1][:, None] + ny[:, None] * offsets[None, :]
    ix = ((px - origin[0]) / res).astype(np.int64).ravel()
    iy = ((py - origin[1]) / res).astype(np.int64).ravel()
    ok = (ix >= 0) & (ix < shape[1]) & (iy >= 0) & (iy < shape[0])
    if value is None:
        mask_set[iy[ok], ix[ok]] = True
    else:
        mask_set[iy[ok], ix[ok]] = value


def derive_right_of_way(lanes: list[LaneSpec], points: list[np.ndarray], conflict_distance: float = 2.5) -> None:
    """Fill ``foes`` of every connector with ``foes is None`` and ``junction >= 0``.

    Two connectors of one junction that leave different lanes conflict where their centre lines come
    closer than ``conflict_distance`` (crossing or merging paths); the meeting point is where they are
    closest (the end, for a merge). Of a conflicting pair, the connector with the lower rank yields:
    rank = (approach ``priority``, not stop/yield controlled, straight > right turn > left turn), ties
    broken by lane index, so the relation has no cycles and waiting vehicles cannot lock each other.
    ``points`` are the lanes' resampled centre lines.
    """
    from scipy.spatial.distance import cdist

    pred: dict[int, int] = {}
    for i, ln in enumerate(lanes):
        for s in ln.successors:
            pred.setdefault(s, i)
    todo = [i for i, ln in enumerate(lanes) if ln.kind == CONNECTOR_LANE and ln.junction >= 0 and ln.foes is None]
    if not todo:
        return
    by_j: dict[int, list[int]] = {}
    for i, ln in enumerate(lanes):
        if ln.kind == CONNECTOR_LANE and ln.junction >= 0:
            by_j.setdefault(ln.junction, []).append(i)

    def rank(i):
        ln, p = lanes[i], points[i]
        h = polyline_headings(p)
        turn = float(np.angle(np.exp(1j * (h[-1] - h[0]))))
        kind = 2 if abs(turn) < np.radians(30) else (1 if turn < 0 else 0)
        minor = ln.control in (CONTROL_STOP, CONTROL_YIELD)
        return (ln.priority, 0 if minor else 1, kind, -i)

    found: dict[int, list[tuple[int, float, bool]]] = {i: [] for i in todo}
    for members in by_j.values():
        arc = {i: polyline_arclength(points[i]) for i in members}
        for ai, a in enumerate(members):
            for b in members[ai + 1:]:
                if a not in found and b not in found:
                    continue
                if pred.get(a, -1) == pred.get(b, -2):
                    continue  # leaving the same lane: they diverge
                d = cdist(points[a], points[b])
                if lanes[a].successors and lanes[a].successors == lanes[b].successors:
                    ia, ib = len(points[a]) - 1, len(points[b]) - 1
                elif d.min() < conflict_distance:
                    ia, ib = np.unravel_index(np.argmin(d), d.shape)
                else:
                    continue
                a_yields = rank(a) < rank(b)
                if a in found:
                    found[a].append((b, float(arc[b][ib]), a_yields))
                if b in found:
                    found[b].append((a, float(arc[a][ia]), not a_yields))
    for i, f in found.items():
        lanes[i].foes = f


def _obstacle_on_lanes(ob: ObstacleSpec, lanes: list[LaneSpec], points: list[np.ndarray]):
    """(lane, s0, s1, edge) of the road lane an obstacle intrudes most, or (-1, 0, 0, 0)."""
    from steer.driving.geometry import box_corners

    corners = box_corners(np.float64(ob.x), np.float64(ob.y), np.float64(ob.yaw), ob.length, ob.width)
    best = (-1, 0.0, 0.0, 0.0, np.inf)
    for i, ln in enumerate(lanes):
        if ln.kind != ROAD_LANE:
            continue
        p = points[i]
        lo, hi = p.min(0) - 10.0, p.max(0) + 10.0
        if not (lo[0] < ob.x < hi[0] and lo[1] < ob.y < hi[1]):
            continue
        s = polyline_arclength(p)
        h = polyline_headings(p)
        j = np.argmin(np.hypot(p[:, 0] - ob.x, p[:, 1] - ob.y))
        c, sn = np.cos(h[j]), np.sin(h[j])
        dx, dy = corners[:, 0] - p[j, 0], corners[:, 1] - p[j, 1]
        lon = s[j] + dx * c + dy * sn
        lat = -dx * sn + dy * c
        centre_lat = float(lat.mean())
        edge = float(lat.max() if centre_lat < 0 else lat.min())
        if abs(edge) >= ln.width / 2.0 or lon.max() < 0 or lon.min() > s[-1]:
            continue
        if abs(edge) < best[4]:
            best = (i, float(max(lon.min(), 0.0)), float(min(lon.max(), s[-1])), edge, abs(edge))
    return best[:4]


def build_roadmap(
    lanes: list[LaneSpec],
    lights: list[LightSpec],
    junction_polygons: list[np.ndarray] = (),
    grid_res: float = 0.5,
    margin: float = 20.0,
    shoulder_width: float = 1.5,
    lateral_accel: float = 2.5,
    slot_spacing: float = 12.0,
    crossings: list[CrossingSpec] = (),
    obstacles: list[ObstacleSpec] = (),
) -> RoadMap:
    """Build a single-town :class:`RoadMap` from lane, light, crossing and obstacle specs.

    ``junction_polygons`` are filled as drivable (connectors alone leave the corners out);
    ``lateral_accel`` (m/s^2) sets the comfortable speed on curved lanes. Connectors without a
    right of way get one from :func:`derive_right_of_way`; each obstacle is registered on the lane it
    stands on, and no traffic spawns next to it.
    """
    from scipy.ndimage import distance_transform_edt
    from matplotlib.path import Path

    pts_list, offs, counts, lengths, spacing, heads, comfort, radius = [], [], [], [], [], [], [], []
    off = 0
    for ln in lanes:
        p = resample_polyline(ln.points, 1.0)
        s = polyline_arclength(p)
        pts_list.append(p)
        heads.append(polyline_headings(p))
        offs.append(off)
        counts.append(len(p))
        lengths.append(s[-1])
        spacing.append(s[-1] / (len(p) - 1))
        k = polyline_curvature(p).max() if len(p) > 2 else 0.0
        comfort.append(min(ln.speed_limit, np.sqrt(lateral_accel / max(k, 1e-6))))
        radius.append(min_turn_radius_of(p, heads[-1]))
        off += len(p)
    pts = np.concatenate(pts_list)
    n_l = len(lanes)
    for ln in lanes:
        if ln.light >= 0:
            ln.control = CONTROL_LIGHT
    derive_right_of_way(lanes, pts_list)
    max_foe = max(1, max(len(ln.foes or ()) for ln in lanes))
    foe = -np.ones((n_l, max_foe), np.int64)
    foe_s = np.zeros((n_l, max_foe))
    yields = np.zeros((n_l, max_foe), bool)
    for i, ln in enumerate(lanes):
        for k, (f, fs, y) in enumerate(ln.foes or ()):
            foe[i, k], foe_s[i, k], yields[i, k] = f, fs, y
    ob_lane = [_obstacle_on_lanes(ob, lanes, pts_list) for ob in obstacles]
    lane_obstacle = -np.ones(n_l, np.int64)
    for o, (ln_i, *_rest) in enumerate(ob_lane):
        if ln_i >= 0 and lane_obstacle[ln_i] < 0:
            lane_obstacle[ln_i] = o
    max_succ = max(1, max(len(ln.successors) for ln in lanes))
    succ = -np.ones((n_l, max_succ), np.int64)
    for i, ln in enumerate(lanes):
        succ[i, : len(ln.successors)] = ln.successors
    succ_count = np.array([len(ln.successors) for ln in lanes], np.int64)

    n_ph = max(1, max((len(lt.durations) for lt in lights), default=1))
    phase_end = np.full((max(len(lights), 1), n_ph), np.inf)
    phase_state = np.full((max(len(lights), 1), n_ph), LIGHT_GREEN, np.int8)
    cycle = np.ones(max(len(lights), 1))
    for i, lt in enumerate(lights):
        ends = np.cumsum(lt.durations)
        phase_end[i, : len(ends)] = ends
        phase_state[i, : len(ends)] = lt.states
        phase_state[i, len(ends) :] = lt.states[-1]
        cycle[i] = ends[-1]
    light_group = np.array([lt.group for lt in lights] or [0], np.int64)
    n_groups = int(light_group.max()) + 1

    # Stop lines: across the start of each lit, stop- or yield-controlled connector (light -1 when unlit).
    sl_pts, sl_light = [], []
    for i, ln in enumerate(lanes):
        if ln.control == CONTROL_NONE:
            continue
        p0, h0 = pts_list[i][0], heads[i][0]
        n = np.array([-np.sin(h0), np.cos(h0)])
        for o in np.linspace(-ln.width / 2 + 0.3, ln.width / 2 - 0.3, max(2, int(ln.width / 0.5))):
            sl_pts.append(p0 + n * o)
            sl_light.append(ln.light)
    stopline_pts = np.array(sl_pts, np.float64).reshape(-1, 2)
    stopline_light = np.array(sl_light, np.int64)

    # Rasters.
    lo = pts.min(0) - margin
    hi = pts.max(0) + margin
    shape = (int(np.ceil((hi[1] - lo[1]) / grid_res)), int(np.ceil((hi[0] - lo[0]) / grid_res)))
    drivable = np.zeros(shape, bool)
    cw = np.full(shape, CW_OFFROAD, np.int16)
    speed = np.zeros(shape, np.uint8)
    marks = np.zeros(shape, np.uint8)
    for poly in junction_polygons:
        # Only the cells of the polygon's bounding box are tested (large imported maps).
        poly = np.asarray(poly)
        i0, j0 = np.floor((poly.min(0) - lo) / grid_res).astype(np.int64)
        i1, j1 = np.ceil((poly.max(0) - lo) / grid_res).astype(np.int64)
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, shape[1]), min(j1, shape[0])
        if i1 <= i0 or j1 <= j0:
            continue
        yy, xx = np.mgrid[j0:j1, i0:i1]
        centres = np.stack([lo[0] + (xx.ravel() + 0.5) * grid_res, lo[1] + (yy.ravel() + 0.5) * grid_res], 1)
        inside = Path(poly).contains_points(centres).reshape(yy.shape)
        drivable[j0:j1, i0:i1] |= inside
        cw[j0:j1, i0:i1][inside] = CW_JUNCTION
    for i, ln in enumerate(lanes):
        half = ln.width / 2.0
        offsets = np.arange(-half, half + 1e-9, grid_res * 0.5)
        _rasterize_strip(drivable, pts_list[i], offsets, lo, grid_res, shape)
        value = CW_JUNCTION if ln.kind == CONNECTOR_LANE else ln.carriageway
        if ln.kind == ROAD_LANE:
            _rasterize_strip(cw, pts_list[i], offsets, lo, grid_res, shape, value)
        else:
            tmp = np.zeros(shape, bool)
            _rasterize_strip(tmp, pts_list[i], offsets, lo, grid_res, shape)
            cw[tmp & (cw == CW_OFFROAD)] = CW_JUNCTION
        _rasterize_strip(speed, pts_list[i], offsets, lo, grid_res, shape,
                         np.uint8(min(255, round(ln.speed_limit / SPEED_LIMIT_SCALE * 255))))
    for i, ln in enumerate(lanes):
        if ln.kind != ROAD_LANE:
            continue
        p = pts_list[i]
        # Left boundary: dashed between same-direction lanes, solid towards oncoming traffic.
        left_val = 128 if ln.left >= 0 else 255
        bound = np.array([ln.width / 2.0])
        if ln.left >= 0:
            s = polyline_arclength(p)
            on = (s % 6.0) < 3.0
            for a, b in _runs(on):
                if b - a >= 2:
                    _rasterize_strip(marks, p[a:b], bound, lo, grid_res, shape, left_val)
        else:
            _rasterize_strip(marks, p, bound, lo, grid_res, shape, left_val)
        if ln.right < 0:
            _rasterize_strip(marks, p, -bound, lo, grid_res, shape, 255)
    inside_d = distance_transform_edt(drivable) * grid_res
    outside_d = distance_transform_edt(~drivable) * grid_res
    sdf = (outside_d - inside_d).astype(np.float32)
    shoulder = ((sdf > 0) & (sdf <= shoulder_width)).astype(np.uint8) * 255
    layers = np.stack([drivable.astype(np.uint8) * 255, marks, speed, shoulder], axis=-1)

    slot_lane, slot_s = [], []
    for i, ln in enumerate(lanes):
        if ln.kind != ROAD_LANE:
            continue
        for s in np.arange(6.0, lengths[i] - 6.0, slot_spacing):
            o = lane_obstacle[i]
            if o >= 0 and ob_lane[o][1] - 8.0 < s < ob_lane[o][2] + 8.0:
                continue
            slot_lane.append(i)
            slot_s.append(s)
    slot_lane = np.array(slot_lane, np.int64)
    slot_s = np.array(slot_s, np.float64)

    rm = RoadMap(
        lane_offset=np.array(offs, np.int64),
        lane_count=np.array(counts, np.int64),
        lane_length=np.array(lengths),
        lane_spacing=np.array(spacing),
        lane_width=np.array([ln.width for ln in lanes]),
        lane_speed=np.array([ln.speed_limit for ln in lanes]),
        lane_comfort_speed=np.array(comfort),
        lane_kind=np.array([ln.kind for ln in lanes], np.int8),
        lane_light=np.array([ln.light for ln in lanes], np.int64),
        lane_carriageway=np.array([ln.carriageway for ln in lanes], np.int64),
        lane_left=np.array([ln.left for ln in lanes], np.int64),
        lane_right=np.array([ln.right for ln in lanes], np.int64),
        lane_town=np.zeros(n_l, np.int64),
        lane_succ=succ,
        lane_succ_count=succ_count,
        lane_names=[ln.name for ln in lanes],
        lane_control=np.array([ln.control for ln in lanes], np.int8),
        lane_foe=foe,
        lane_foe_s=foe_s,
        lane_yields=yields,
        lane_obstacle=lane_obstacle,
        lane_min_radius=np.array(radius),
        pts=pts,
        pt_heading=np.concatenate(heads),
        light_group=light_group,
        light_phase_end=phase_end,
        light_phase_state=phase_state,
        light_cycle=cycle,
        light_names=[lt.name for lt in lights] or ["none"],
        n_groups=n_groups,
        stopline_pts=stopline_pts,
        stopline_light=stopline_light,
        stopline_town=np.zeros(len(stopline_light), np.int64),
        slot_lane=slot_lane,
        slot_s=slot_s,
        slot_xy=np.zeros((0, 2)),
        town_slot_offset=np.array([0]),
        town_slot_count=np.array([len(slot_lane)]),
        grid_origin=lo[None, :].astype(np.float64),
        grid_res=grid_res,
        sdf=sdf[None],
        carriageway_grid=cw[None],
        static_layers=layers[None],
        n_carriageways=max(0, max((ln.carriageway for ln in lanes), default=-1)) + 1,
        town_lane_offset=np.array([0]),
        town_lane_count=np.array([n_l]),
        town_group_offset=np.array([0]),
        town_group_count=np.array([n_groups]),
        crossing_a=np.array([c.a for c in crossings], np.float64).reshape(-1, 2),
        crossing_b=np.array([c.b for c in crossings], np.float64).reshape(-1, 2),
        crossing_marked=np.array([c.marked for c in crossings], bool),
        crossing_width=np.array([c.width for c in crossings], np.float64),
        town_crossing_offset=np.array([0]),
        town_crossing_count=np.array([len(crossings)]),
        obstacle_xy=np.array([[o.x, o.y] for o in obstacles], np.float64).reshape(-1, 2),
        obstacle_yaw=np.array([o.yaw for o in obstacles], np.float64),
        obstacle_length=np.array([o.length for o in obstacles], np.float64),
        obstacle_width=np.array([o.width for o in obstacles], np.float64),
        obstacle_kind=np.array([o.kind for o in obstacles], np.int8),
        obstacle_lane=np.array([b[0] for b in ob_lane], np.int64),
        obstacle_s0=np.array([b[1] for b in ob_lane], np.float64),
        obstacle_s1=np.array([b[2] for b in ob_lane], np.float64),
        obstacle_edge=np.array([b[3] for b in ob_lane], np.float64),
        town_obstacle_offset=np.array([0]),
        town_obstacle_count=np.array([len(obstacles)]),
    )
    x, y, _ = rm.lane_pose(slot_lane, slot_s)
    rm.slot_xy = np.stack([x, y], 1).reshape(-1, 2)
    return rm


def min_turn_radius_of(points: np.ndarray, headings: np.ndarray, window: float = 3.0) -> float:
    """Tightest radius (m) of a polyline: arc length over heading change across ``window`` metres of
    arc (a window rather than one vertex, so that a kink where two shapes join is not a tight turn)."""
    s = polyline_arclength(points)
    if s[-1] < 1e-6 or len(points) < 3:
        return float("inf")
    h = np.unwrap(headings[:-1])
    sm = 0.5 * (s[:-1] + s[1:])  # headings belong to the segments
    j = np.minimum(np.searchsorted(sm, sm + min(window, s[-1]) - 1e-9), len(sm) - 1)
    ok = j > np.arange(len(sm))
    if not ok.any():
        return float("inf")
    return float((np.maximum(sm[j] - sm, 1e-6)[ok] / np.maximum(np.abs(h[j] - h)[ok], 1e-9)).min())


def _runs(mask: np.ndarray):
    """(start, stop) index pairs of the True runs of a boolean array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def merge_maps(maps: list[RoadMap]) -> RoadMap:
    """Merge single-town maps into one bank with global lane, light, group and carriageway indices."""
    if len(maps) == 1:
        return maps[0]
    lane_off = np.cumsum([0] + [m.n_lanes for m in maps])[:-1]
    pt_off = np.cumsum([0] + [len(m.pts) for m in maps])[:-1]
    light_off = np.cumsum([0] + [m.n_lights for m in maps])[:-1]
    group_off = np.cumsum([0] + [m.n_groups for m in maps])[:-1]
    cw_off = np.cumsum([0] + [m.n_carriageways for m in maps])[:-1]
    slot_off = np.cumsum([0] + [len(m.slot_lane) for m in maps])[:-1]
    crossing_off = np.cumsum([0] + [len(m.crossing_a) for m in maps])[:-1]
    obstacle_off = np.cumsum([0] + [len(m.obstacle_xy) for m in maps])[:-1]
    max_foe = max(m.lane_foe.shape[1] for m in maps)

    def pad_foe(a, fill):
        return np.pad(a, ((0, 0), (0, max_foe - a.shape[1])), constant_values=fill)

    def shift(a, o):
        return np.where(a >= 0, a + o, a)

    max_succ = max(m.lane_succ.shape[1] for m in maps)
    succ = np.concatenate([np.pad(shift(m.lane_succ, lane_off[i]), ((0, 0), (0, max_succ - m.lane_succ.shape[1])),
                                  constant_values=-1) for i, m in enumerate(maps)])
    n_ph = max(m.light_phase_end.shape[1] for m in maps)
    ph_end = np.concatenate([np.pad(m.light_phase_end, ((0, 0), (0, n_ph - m.light_phase_end.shape[1])),
                                    constant_values=np.inf) for m in maps])
    ph_state = np.concatenate([np.pad(m.light_phase_state, ((0, 0), (0, n_ph - m.light_phase_state.shape[1])),
                                      mode="edge") for m in maps])
    h = max(m.sdf.shape[1] for m in maps)
    w = max(m.sdf.shape[2] for m in maps)

    def pad_grid(a, fill):
        return np.concatenate([np.pad(g, ((0, 0), (0, h - g.shape[1]), (0, w - g.shape[2])) + ((0, 0),) * (g.ndim - 3),
                                      constant_values=fill) for g in a])

    cw = [np.where(m.carriageway_grid >= 0, m.carriageway_grid + cw_off[i], m.carriageway_grid) for i, m in
          enumerate(maps)]
    cat = np.concatenate
    return RoadMap(
        lane_offset=cat([m.lane_offset + pt_off[i] for i, m in enumerate(maps)]),
        lane_count=cat([m.lane_count for m in maps]),
        lane_length=cat([m.lane_length for m in maps]),
        lane_spacing=cat([m.lane_spacing for m in maps]),
        lane_width=cat([m.lane_width for m in maps]),
        lane_speed=cat([m.lane_speed for m in maps]),
        lane_comfort_speed=cat([m.lane_comfort_speed for m in maps]),
        lane_kind=cat([m.lane_kind for m in maps]),
        lane_light=cat([shift(m.lane_light, light_off[i]) for i, m in enumerate(maps)]),
        lane_carriageway=cat([shift(m.lane_carriageway, cw_off[i]) for i, m in enumerate(maps)]),
        lane_left=cat([shift(m.lane_left, lane_off[i]) for i, m in enumerate(maps)]),
        lane_right=cat([shift(m.lane_right, lane_off[i]) for i, m in enumerate(maps)]),
        lane_town=cat([np.full(m.n_lanes, i) for i, m in enumerate(maps)]),
        lane_succ=succ,
        lane_succ_count=cat([m.lane_succ_count for m in maps]),
        lane_names=sum([m.lane_names for m in maps], []),
        lane_control=cat([m.lane_control for m in maps]),
        lane_foe=cat([pad_foe(shift(m.lane_foe, lane_off[i]), -1) for i, m in enumerate(maps)]),
        lane_foe_s=cat([pad_foe(m.lane_foe_s, 0.0) for m in maps]),
        lane_yields=cat([pad_foe(m.lane_yields, False) for m in maps]),
        lane_obstacle=cat([shift(m.lane_obstacle, obstacle_off[i]) for i, m in enumerate(maps)]),
        lane_min_radius=cat([m.lane_min_radius for m in maps]),
        pts=cat([m.pts for m in maps]),
        pt_heading=cat([m.pt_heading for m in maps]),
        light_group=cat([m.light_group + group_off[i] for i, m in enumerate(maps)]),
        light_phase_end=ph_end,
        light_phase_state=ph_state,
        light_cycle=cat([m.light_cycle for m in maps]),
        light_names=sum([m.light_names for m in maps], []),
        n_groups=int(sum(m.n_groups for m in maps)),
        stopline_pts=cat([m.stopline_pts for m in maps]),
        stopline_light=cat([shift(m.stopline_light, light_off[i]) for i, m in enumerate(maps)]),
        stopline_town=cat([np.full(len(m.stopline_light), i) for i, m in enumerate(maps)]),
        slot_lane=cat([m.slot_lane + lane_off[i] for i, m in enumerate(maps)]),
        slot_s=cat([m.slot_s for m in maps]),
        slot_xy=cat([m.slot_xy for m in maps]),
        town_slot_offset=np.asarray(slot_off),
        town_slot_count=np.array([len(m.slot_lane) for m in maps]),
        grid_origin=cat([m.grid_origin for m in maps]),
        grid_res=maps[0].grid_res,
        sdf=pad_grid([m.sdf for m in maps], np.float32(50.0)),
        carriageway_grid=pad_grid(cw, CW_OFFROAD),
        static_layers=pad_grid([m.static_layers for m in maps], 0),
        n_carriageways=int(sum(m.n_carriageways for m in maps)),
        town_lane_offset=np.asarray(lane_off),
        town_lane_count=np.array([m.n_lanes for m in maps]),
        town_group_offset=np.asarray(group_off),
        town_group_count=np.array([m.n_groups for m in maps]),
        crossing_a=cat([m.crossing_a for m in maps]),
        crossing_b=cat([m.crossing_b for m in maps]),
        crossing_marked=cat([m.crossing_marked for m in maps]),
        crossing_width=cat([m.crossing_width for m in maps]),
        town_crossing_offset=np.asarray(crossing_off),
        town_crossing_count=np.array([len(m.crossing_a) for m in maps]),
        obstacle_xy=cat([m.obstacle_xy for m in maps]),
        obstacle_yaw=cat([m.obstacle_yaw for m in maps]),
        obstacle_length=cat([m.obstacle_length for m in maps]),
        obstacle_width=cat([m.obstacle_width for m in maps]),
        obstacle_kind=cat([m.obstacle_kind for m in maps]),
        obstacle_lane=cat([shift(m.obstacle_lane, lane_off[i]) for i, m in enumerate(maps)]),
        obstacle_s0=cat([m.obstacle_s0 for m in maps]),
        obstacle_s1=cat([m.obstacle_s1 for m in maps]),
        obstacle_edge=cat([m.obstacle_edge for m in maps]),
        town_obstacle_offset=np.asarray(obstacle_off),
        town_obstacle_count=np.array([len(m.obstacle_xy) for m in maps]),
    )
