"""Import SUMO ``.net.xml`` networks into the shared map format through sumolib.

Normal lanes become road lanes (same-direction lanes of one edge share a carriageway; SUMO lane
index 0 is the rightmost), every connection becomes a connector lane along its internal (via) lanes,
and each signalled connection gets a light whose schedule is the traffic-light program's state for
its link index (all links of one traffic light share a group, so their offsets stay together).
Permissive green "g" stays its own state (LIGHT_GREEN_YIELD: go after giving way). Right of way comes
from the network's junction logic: each connector's control from its connection state (a light, the
priority road, give way, a stop sign or all-way stop, equal rank) and its foes from the junction's
foe and response matrices (which links conflict, and which of two gives way: sumolib's
``Node.areFoes`` / ``Node.forbids``), meeting where the two centre lines come closest. A junction
without logic (SUMO's "unregulated") gets the right of way derived from geometry and ranks.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from steer.driving.geometry import polyline_headings, resample_polyline
from steer.driving.roadmap import (
    CONNECTOR_LANE, CONTROL_LIGHT, CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, LIGHT_GREEN, LIGHT_GREEN_YIELD,
    LIGHT_RED, LIGHT_YELLOW, ROAD_LANE, LaneSpec, LightSpec, RoadMap,
    build_roadmap, min_turn_radius_of,
)


class SumoNetworkError(ValueError):
    """A SUMO network could not be found or read."""

    user_facing = True


def bundled_network(name: str = "cross") -> str:
    """Path of a network bundled with eclipse-sumo (``cross``: one signalised 4-way junction)."""
    try:
        import sumo
    except ImportError as err:  # pragma: no cover - depends on the install
        raise SumoNetworkError("eclipse-sumo is not installed; install steer-rl with the 'driving' extra.") from err
    hits = glob.glob(os.path.join(os.path.dirname(sumo.__file__), "tools", "game", name, f"{name}.net.xml"))
    if not hits:
        raise SumoNetworkError(f"no bundled SUMO network named {name!r}; try 'cross', 'grid6' or 'square'.")
    return hits[0]


def _state_code(ch: str) -> int:
    if ch == "G":
        return LIGHT_GREEN
    if ch == "g":  # go after giving way to the foes with priority
        return LIGHT_GREEN_YIELD
    if ch in "yY":
        return LIGHT_YELLOW
    if ch in "oO":  # signal off: no restriction
        return LIGHT_GREEN
    return LIGHT_RED  # r, R, s, u (red-yellow)


_CONTROL = {"m": CONTROL_YIELD, "Z": CONTROL_YIELD, "s": CONTROL_STOP, "w": CONTROL_STOP}
"""Connection state (SUMO link state without a light) -> control of the connector: minor links give
way, stop and all-way-stop links stop first; major ("M"), equal-rank ("=") and unregulated links
have none (their foes say whom they still give way to)."""


def _control(conn) -> int:
    if conn.getTLSID():
        return CONTROL_LIGHT
    return _CONTROL.get(conn.getState(), CONTROL_NONE)  # "O"/"o": unregulated


@dataclass
class SumoMap:
    """An imported network: the map plus the SUMO ids behind its lanes and lights."""

    roadmap: RoadMap
    """The map in the shared format."""
    lane_ids: list[str]
    """SUMO lane id of each road lane; for a connector, its first via lane (or "from->to")."""
    lane_edge: list[str]
    """SUMO edge id of each road lane ("" for connectors)."""
    light_links: list[tuple[str, int]]
    """(traffic light id, link index) of each light."""
    net_path: str
    """The .net.xml file."""


def _tightest_radius(src_shape, poly: np.ndarray, dst_shape) -> float:
    """Tightest radius (m) of a connection with 3 m of the lanes on either side: the turn may sit in
    the joints (e.g. a 0.1 m turnaround from OpenDRIVE), not in the connector's own shape."""
    def cut(shape, from_end: bool) -> np.ndarray:
        d = resample_polyline(np.asarray(shape, float), 0.5)
        return d[-7:] if from_end else d[:7]

    path = np.concatenate([cut(src_shape, True), poly, cut(dst_shape, False)])
    dense = resample_polyline(path, 0.5)
    return min_turn_radius_of(dense, polyline_headings(dense))


def _bit(rows: dict[int, str], row: int, col: int) -> bool:
    """Bit ``col`` of a junction's request row ``row`` (SUMO writes the bits right to left)."""
    r = rows.get(row)
    return bool(r) and 0 <= col < len(r) and r[-(col + 1)] == "1"


def _junction_foes(node, conns: list, conn_lane: dict, lanes: list[LaneSpec]) -> None:
    """Set ``foes`` of a junction's connectors from its foe and response matrices."""
    from scipy.spatial.distance import cdist

    idx = {c: c.getJunctionIndex() for c in conns}
    pts = {c: resample_polyline(lanes[conn_lane[c]].points, 1.0) for c in conns}
    arc = {c: np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts[c], axis=0), axis=1))]) for c in conns}
    for c in conns:
        lanes[conn_lane[c]].foes = []
    for ai, a in enumerate(conns):
        for b in conns[ai + 1:]:
            ia, ib = idx[a], idx[b]
            a_waits, b_waits = _bit(node._prohibits, ia, ib), _bit(node._prohibits, ib, ia)
            if not (a_waits or b_waits or _bit(node._foes, ia, ib)):
                continue
            if a.getFromLane() is b.getFromLane():
                continue  # leaving the same lane: they diverge
            if a.getToLane() is b.getToLane():
                ka, kb = len(pts[a]) - 1, len(pts[b]) - 1  # a merge meets at the end
            else:
                ka, kb = np.unravel_index(np.argmin(cdist(pts[a], pts[b])), (len(pts[a]), len(pts[b])))
            # Exactly one side yields: the logic's answer, else (lights keep them apart) the later link.
            a_yields = a_waits if a_waits != b_waits else ia > ib
            lanes[conn_lane[a]].foes.append((conn_lane[b], float(arc[b][kb]), bool(a_yields)))
            lanes[conn_lane[b]].foes.append((conn_lane[a], float(arc[a][ka]), not a_yields))


def import_sumo_net(path: str, min_radius: float = 0.0) -> SumoMap:
    """Read a SUMO network with sumolib and convert it (see module docstring).

    Connections tighter than ``min_radius`` metres (a turning circle, see
    :func:`~steer.driving.routes.min_turn_radius`) are left out: no car follows SUMO's on-the-spot
    turnarounds, and neither routes nor traffic may use them.
    """
    import sumolib

    if not os.path.exists(path):
        raise SumoNetworkError(f"SUMO network {path!r} does not exist; pass a .net.xml file.")
    if not str(path).endswith(".net.xml"):
        raise SumoNetworkError(f"{path!r} is not a SUMO network; pass a .net.xml file.")
    try:
        net = sumolib.net.readNet(path, withInternal=True, withPrograms=True, withFoes=True)
    except Exception as err:  # sumolib raises whatever its XML parser raises
        raise SumoNetworkError(f"SUMO network {path!r} cannot be read ({type(err).__name__}: {err}).") from err
    lanes: list[LaneSpec] = []
    index: dict[str, int] = {}
    edges: list[str] = []
    normal = [e for e in net.getEdges() if e.getFunction() == ""]
    for cw, e in enumerate(normal):
        for ln in e.getLanes():
            index[ln.getID()] = len(lanes)
            lanes.append(LaneSpec(np.asarray(ln.getShape(), float), float(ln.getWidth()), float(ln.getSpeed()),
                                  kind=ROAD_LANE, carriageway=cw, name=ln.getID()))
            edges.append(e.getID())
        ids = [index[ln.getID()] for ln in e.getLanes()]
        for k, i in enumerate(ids):
            lanes[i].right = ids[k - 1] if k > 0 else -1
            lanes[i].left = ids[k + 1] if k + 1 < len(ids) else -1
    # Lights: one per (tls, link index), the schedule of the program that runs first.
    lights: list[LightSpec] = []
    light_of: dict[tuple[str, int], int] = {}
    for g, tls in enumerate(net.getTrafficLights()):
        progs = tls.getPrograms()
        prog = progs[sorted(progs)[0]]
        phases = prog.getPhases()
        n_links = len(phases[0].state)
        for link in range(n_links):
            durs = [float(ph.duration) for ph in phases]
            states = [_state_code(ph.state[link]) for ph in phases]
            light_of[(tls.getID(), link)] = len(lights)
            lights.append(LightSpec(g, durs, states, name=f"{tls.getID()}:{link}"))
    # Connectors along the via chain of every connection between normal lanes.
    junction_of: dict[str, int] = {}
    conn_lane: dict = {}  # sumolib connection -> connector lane
    for e in normal:
        for ln in e.getLanes():
            src = index[ln.getID()]
            for c in ln.getOutgoing():
                dst = c.getToLane()
                if dst.getEdge().getFunction() != "":
                    continue
                pts = [np.asarray(ln.getShape()[-1:], float)]
                via = c.getViaLaneID()
                first_via = via
                width = float(ln.getWidth())
                speed = float(dst.getSpeed())
                guard = 0
                while via and guard < 10:
                    vl = net.getLane(via)
                    pts.append(np.asarray(vl.getShape(), float))
                    speed = min(speed, float(vl.getSpeed()))
                    nxt = [cc for cc in vl.getOutgoing()]
                    via = nxt[0].getViaLaneID() if nxt else ""
                    guard += 1
                pts.append(np.asarray(dst.getShape()[:1], float))
                poly = np.concatenate(pts)
                keep = np.concatenate([[True], np.linalg.norm(np.diff(poly, axis=0), axis=1) > 1e-3])
                poly = poly[keep]
                if len(poly) < 2:
                    lanes[src].successors.append(index[dst.getID()])
                    continue
                if min_radius > 0 and _tightest_radius(ln.getShape(), poly, dst.getShape()) < min_radius:
                    continue
                light = light_of.get((c.getTLSID(), c.getTLLinkIndex()), -1) if c.getTLSID() else -1
                idx = len(lanes)
                node = e.getToNode()
                junc = junction_of.setdefault(node.getID(), len(junction_of))
                conn_lane[c] = idx
                lanes.append(LaneSpec(poly, width, speed, successors=[index[dst.getID()]], kind=CONNECTOR_LANE,
                                      light=light, name=first_via or f"{ln.getID()}->{dst.getID()}",
                                      control=_control(c), junction=junc, priority=int(e.getPriority())))
                edges.append("")
                lanes[src].successors.append(idx)
    # Right of way from the junction logic (nodes without one keep foes=None: derived from geometry).
    by_node: dict[str, list] = {}
    for c in conn_lane:
        by_node.setdefault(c.getFrom().getToNode().getID(), []).append(c)
    for nid, conns in by_node.items():
        node = net.getNode(nid)
        if not node._prohibits:
            continue
        _junction_foes(node, conns, conn_lane, lanes)
    polys = [np.asarray(n.getShape(), float) for n in net.getNodes() if len(n.getShape()) >= 3]
    rm = build_roadmap(lanes, lights, polys)
    links = [(nm.rsplit(":", 1)[0], int(nm.rsplit(":", 1)[1])) for nm in (lt.name for lt in lights)]
    return SumoMap(rm, [ln.name for ln in lanes], edges, links, path)
