"""OpenDRIVE export of our maps (so that CARLA's ``carla.Map`` can load a generated town).

Every lane becomes a one-lane road whose reference line is the lane centre (a ``laneOffset`` of half
a lane width puts lane -1 on it); its plan view is a chain of straight pieces at about 2 m. Junction
connectors become connecting roads of their junction, linked lane -1 to lane -1.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import quoteattr

import numpy as np

from steer.driving.geometry import resample_polyline
from steer.driving.roadmap import CONNECTOR_LANE, LaneSpec


def _junction_of(name: str) -> int:
    # Junction ids are kept apart from road ids (some readers share one id space).
    m = re.match(r"j(\d+)_", name)
    return 100000 + int(m.group(1)) if m else -1


def export_opendrive(lanes: list[LaneSpec], name: str = "steer_town", piece: float = 2.0) -> str:
    """OpenDRIVE 1.4 text for lane specs (as :func:`steer.driving.town.town_specs` returns them)."""
    preds: dict[int, list[int]] = {i: [] for i in range(len(lanes))}
    for i, ln in enumerate(lanes):
        for s in ln.successors:
            preds[s].append(i)
    allp = np.concatenate([ln.points for ln in lanes])
    n_, s_ = allp[:, 1].max(), allp[:, 1].min()
    e_, w_ = allp[:, 0].max(), allp[:, 0].min()
    out = ['<?xml version="1.0" standalone="yes"?>', "<OpenDRIVE>",
           f'  <header revMajor="1" revMinor="4" name={quoteattr(name)} version="1" north="{n_:.3f}" '
           f'south="{s_:.3f}" east="{e_:.3f}" west="{w_:.3f}"/>']
    junctions: dict[int, list[tuple[int, int]]] = {}
    for i, ln in enumerate(lanes):
        pts = resample_polyline(ln.points, piece)
        seg = np.diff(pts, axis=0)
        lens = np.linalg.norm(seg, axis=1)
        total = float(lens.sum())
        is_conn = ln.kind == CONNECTOR_LANE
        junc = _junction_of(ln.name) if is_conn else -1
        out.append(f'  <road name={quoteattr(ln.name)} length="{total:.6f}" id="{i}" junction="{junc}">')
        out.append("    <link>")
        if is_conn:
            out.append(f'      <predecessor elementType="road" elementId="{preds[i][0]}" contactPoint="end"/>')
            out.append(f'      <successor elementType="road" elementId="{ln.successors[0]}" contactPoint="start"/>')
            for p in preds[i]:
                junctions.setdefault(junc, []).append((p, i))
        else:
            if preds[i]:
                out.append(f'      <predecessor elementType="junction" elementId="{_junction_of(lanes[preds[i][0]].name)}"/>')
            if ln.successors:
                out.append(f'      <successor elementType="junction" elementId="{_junction_of(lanes[ln.successors[0]].name)}"/>')
        out.append("    </link>")
        out.append(f'    <type s="0" type="town"><speed max="{ln.speed_limit:.3f}" unit="m/s"/></type>')
        out.append("    <planView>")
        s = 0.0
        for k in range(len(seg)):
            hdg = float(np.arctan2(seg[k, 1], seg[k, 0]))
            out.append(f'      <geometry s="{s:.6f}" x="{pts[k, 0]:.6f}" y="{pts[k, 1]:.6f}" hdg="{hdg:.9f}" '
                       f'length="{lens[k]:.6f}"><line/></geometry>')
            s += float(lens[k])
        out.append("    </planView>")
        out.append("    <elevationProfile/>")
        out.append("    <lateralProfile/>")
        w = ln.width
        mark = "none" if is_conn else "solid"
        out.append("    <lanes>")
        out.append(f'      <laneOffset s="0" a="{w / 2:.4f}" b="0" c="0" d="0"/>')
        out.append('      <laneSection s="0">')
        out.append('        <center><lane id="0" type="none" level="false"/></center>')
        lane_link = '<link><predecessor id="-1"/><successor id="-1"/></link>' if is_conn else "<link/>"
        out.append(f'        <right><lane id="-1" type="driving" level="false">{lane_link}'
                   f'<width sOffset="0" a="{w:.4f}" b="0" c="0" d="0"/>'
                   f'<roadMark sOffset="0" type="{mark}" weight="standard" color="standard" width="0.15"/>'
                   "</lane></right>")
        out.append("      </laneSection>")
        out.append("    </lanes>")
        out.append("  </road>")
    for j, conns in sorted(junctions.items()):
        out.append(f'  <junction id="{j}" name="junction{j}">')
        for k, (inc, conn) in enumerate(conns):
            out.append(f'    <connection id="{k}" incomingRoad="{inc}" connectingRoad="{conn}" contactPoint="start">'
                       '<laneLink from="-1" to="-1"/></connection>')
        out.append("  </junction>")
    out.append("</OpenDRIVE>")
    return "\n".join(out)
