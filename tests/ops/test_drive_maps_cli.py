"""``--map PATH`` on ``steer drive view``, ``train`` and ``eval``, and ``eval --out`` as JSON."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("sumolib", reason="sumolib is not installed (driving extra)")

from steer.driving.maps import stock_network, sumo_to_opendrive  # noqa: E402
from steer.driving.simulator import INFRACTIONS  # noqa: E402
from steer.ops.drive_cmd import DriveEvalConfig, DriveTrainConfig, DriveTrainError, evaluate, train  # noqa: E402
from steer.ops.drive_stages import DriveStageError, DriveViewConfig, view_episode  # noqa: E402


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("maps"))
    net = stock_network("grid", d, seed=0, size=3)
    return {"net": net, "xodr": sumo_to_opendrive(net, d + "/town.xodr")}


def test_eval_expert_on_a_map_writes_json(maps, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate(DriveEvalConfig(driver="expert", map=maps["xodr"], routes=4, traffic=2, out=out)) == 0
    printed = capsys.readouterr().out
    assert "route completion %" in printed and maps["xodr"] in printed
    res = json.loads(out.read_text())
    e = res["expert"]
    assert e["episodes"] == 4 and 0.0 <= e["route_completion"] <= 1.0 and 0.0 <= e["driving_score"] <= 1.0
    for k in INFRACTIONS:
        assert e[f"infractions/{k}_count"] == round(e[f"infractions/{k}"] * 4)
    assert res["map"] == maps["xodr"]


def test_map_errors_are_one_sentence(maps, tmp_path):
    with pytest.raises(DriveTrainError, match="does not exist"):
        evaluate(DriveEvalConfig(driver="expert", map=str(tmp_path / "missing.xodr")))
    (tmp_path / "town.osm").write_text("<osm/>")
    with pytest.raises(DriveTrainError, match="not a SUMO .net.xml or an OpenDRIVE .xodr"):
        evaluate(DriveEvalConfig(driver="expert", map=str(tmp_path / "town.osm")))
    with pytest.raises(DriveStageError, match="does not exist"):
        view_episode(DriveViewConfig(map=str(tmp_path / "missing.net.xml")))
    with pytest.raises(DriveTrainError, match="--out"):
        evaluate(DriveEvalConfig(driver="expert", map=maps["net"], out=tmp_path / "no" / "such" / "f.json"))
    # On the command line: exit 2 and one line, no traceback.
    r = subprocess.run([sys.executable, "-m", "steer.ops.cli", "drive", "eval", "--driver", "expert", "--map",
                        str(tmp_path / "town.osm")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_view_and_train_take_a_map(maps):
    ep = view_episode(DriveViewConfig(map=maps["net"], policy="expert", steps=3000, bev_size=32, frames=False,
                                      gif=False))
    assert ep.ended_by == "finished" and ep.route_completion == 1.0
    cfg = DriveTrainConfig(map=maps["xodr"]).resolved()
    assert cfg.ppo.env.sim.map_path == maps["xodr"] and cfg.map == ""
    with pytest.raises(DriveTrainError, match="does not exist"):
        train(DriveTrainConfig(map=maps["xodr"] + ".missing", processes=1))
