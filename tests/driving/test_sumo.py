"""SUMO: import of a bundled network, and agreement of the scripted driver in SUMO and in our simulator."""

import json
import subprocess
import sys

import numpy as np
import pytest

from steer.driving.roadmap import CONNECTOR_LANE, ROAD_LANE

sumolib = pytest.importorskip("sumolib", reason="sumolib is not installed (driving extra)")
pytest.importorskip("libsumo", reason="libsumo is not installed (driving extra)")

from steer.driving.sumo_import import bundled_network, import_sumo_net  # noqa: E402


def test_import_bundled_cross_network():
    smap = import_sumo_net(bundled_network("cross"))
    m = smap.roadmap
    net = sumolib.net.readNet(smap.net_path, withPrograms=True)
    normal_lanes = sum(len(e.getLanes()) for e in net.getEdges() if e.getFunction() == "")
    assert (m.lane_kind == ROAD_LANE).sum() == normal_lanes
    assert (m.lane_kind == CONNECTOR_LANE).sum() > 0
    # one light per link of the program, and the first phase is the program's first state string
    tls = net.getTrafficLights()[0]
    prog = list(tls.getPrograms().values())[0]
    assert m.n_lights == len(prog.getPhases()[0].state)
    assert np.isclose(m.light_cycle[0], sum(p.duration for p in prog.getPhases()))
    # connectors start where their lane ends and end where the next lane starts
    for ln in np.flatnonzero(m.lane_kind == CONNECTOR_LANE):
        succ = m.lane_succ[ln, 0]
        assert np.linalg.norm(m.lane_points(ln)[-1] - m.lane_points(succ)[0]) < 0.5
    with pytest.raises(Exception) as e:
        import_sumo_net("/nonexistent.net.xml")
    assert getattr(e.value, "user_facing", False)


def test_scripted_driver_agrees_in_sumo_and_ours():
    # libsumo allows one simulation per process: the comparison runs in its own interpreter.
    out = subprocess.run([sys.executable, "-m", "steer.driving.sumo_backend", "n_routes=6", "seed=1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    reds = 0
    for row in report["routes"]:
        e, b = row["expert"], row["blind"]
        for sim in ("ours", "sumo"):
            assert e[sim]["completion"] >= 0.95, (row["route"], sim, e)
            assert e[sim]["collision_step"] is None and e[sim]["red_light_step"] is None, (row["route"], sim, e)
        # Light-blind cruise without traffic: both detect the same red light at the same step.
        assert b["ours"]["red_light_step"] == b["sumo"]["red_light_step"], row
        assert abs(b["ours"]["completion"] - b["sumo"]["completion"]) < 0.02
        assert row["light_mismatch_steps"] == 0
        reds += b["ours"]["red_light_step"] is not None
    assert reds >= 2  # the check saw real red-light violations, not only clean runs
