"""Map files: stock SUMO networks (netgenerate, untuned) and an OpenDRIVE town, imported and driven."""

import numpy as np
import pytest

sumolib = pytest.importorskip("sumolib", reason="sumolib is not installed (driving extra)")

from steer.driving.evaluation import evaluate_routes  # noqa: E402
from steer.driving.env import DriveEnvConfig  # noqa: E402
from steer.driving.expert import ExpertDriver  # noqa: E402
from steer.driving.maps import MapFileError, load_map, load_map_file, stock_network, sumo_to_opendrive  # noqa: E402
from steer.driving.roadmap import (  # noqa: E402
    CONNECTOR_LANE, CONTROL_LIGHT, CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED,
)
from steer.driving.routes import astar_lanes, min_turn_radius  # noqa: E402
from steer.driving.simulator import INFRACTIONS, SimConfig, map_min_radius  # noqa: E402
from steer.driving.sumo_import import import_sumo_net  # noqa: E402

RADIUS = min_turn_radius(SimConfig.wheelbase, SimConfig.max_steer)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("nets"))
    return {k: stock_network(k, d, seed=5, size=3) for k in ("grid", "spider", "random")}


def _connections(net_path):
    """(sumolib net, {our connector name: sumolib connection}) of a network."""
    net = sumolib.net.readNet(net_path, withInternal=True, withPrograms=True, withFoes=True)
    conns = {}
    for e in net.getEdges():
        if e.getFunction() == "":
            for ln in e.getLanes():
                for c in ln.getOutgoing():
                    conns[c.getViaLaneID()] = c
    return net, conns


def test_permissive_green_is_its_own_light_state(nets):
    smap = import_sumo_net(nets["grid"])
    m = smap.roadmap
    net, conns = _connections(nets["grid"])
    checked = 0
    for ln in np.flatnonzero(m.lane_kind == CONNECTOR_LANE):
        c = conns[m.lane_names[ln]]
        prog = list(net.getTLS(c.getTLSID()).getPrograms().values())[0]
        states = [ph.state[c.getTLLinkIndex()] for ph in prog.getPhases()]
        light = m.lane_light[ln]
        assert m.lane_control[ln] == CONTROL_LIGHT
        ours = list(m.light_phase_state[light, : len(states)])
        assert ours == [{"G": LIGHT_GREEN, "g": LIGHT_GREEN_YIELD, "r": LIGHT_RED}.get(ch, ours[i])
                        for i, ch in enumerate(states)]
        checked += "g" in states
    assert checked >= 12  # netgenerate's default programs give the left turns a permissive green


def _foes(m, ln):
    """{foe connector: this one yields} of a connector."""
    f = m.lane_foe[ln]
    return {int(j): bool(y) for j, y in zip(f[f >= 0], m.lane_yields[ln][f >= 0])}


def test_right_of_way_comes_from_the_junction_logic(nets):
    smap = import_sumo_net(nets["spider"])
    m = smap.roadmap
    net, conns = _connections(nets["spider"])
    conn = np.flatnonzero(m.lane_kind == CONNECTOR_LANE)
    by_name = {m.lane_names[i]: i for i in conn}
    codes = {"M": CONTROL_NONE, "m": CONTROL_YIELD}
    checked = 0
    for ln in conn:
        c = conns[m.lane_names[ln]]
        if not c.getTLSID():
            assert m.lane_control[ln] == codes[c.getState()]
        node = c.getFrom().getToNode()
        if node.getType() in ("unregulated", "traffic_light"):
            continue
        foes = _foes(m, ln)
        for o in node.getConnections():
            j = by_name.get(o.getViaLaneID())
            if j is None or o is c or o.getFromLane() is c.getFromLane():
                continue
            if node.forbids(o, c):  # the junction makes c wait for o
                assert foes.get(j) is True, (m.lane_names[ln], m.lane_names[j])
                checked += 1
            elif node.forbids(c, o):
                assert foes.get(j) is False
        # a foe relation is mutual, with exactly one side yielding
        for j, y in foes.items():
            assert _foes(m, j)[ln] is (not y)
    assert checked > 30
    minor = conn[m.lane_control[conn] == CONTROL_YIELD]
    assert len(minor) > 10 and all(any(_foes(m, ln).values()) for ln in minor)


@pytest.mark.parametrize("jtype", ["right_before_left", "allway_stop"])
def test_unsignalled_junction_types(tmp_path, jtype):
    import subprocess

    from steer.driving.maps import _sumo_binary

    path = str(tmp_path / f"{jtype}.net.xml")
    subprocess.run([_sumo_binary("netgenerate"), "--grid", "--grid.number", "3", "--grid.length", "80",
                    "--default-junction-type", jtype, "-o", path], check=True, capture_output=True)
    m = import_sumo_net(path).roadmap
    conn = np.flatnonzero(m.lane_kind == CONNECTOR_LANE)
    inner = conn[(m.lane_foe[conn] >= 0).any(1)]
    assert len(inner) > 20
    if jtype == "allway_stop":
        assert (m.lane_control[inner] == CONTROL_STOP).all()
    else:
        # Right before left: no signs; a straight movement gives way to the straight one from its
        # right and has the left one give way to it.
        assert (m.lane_control[inner] == CONTROL_NONE).all()
        share = np.mean([np.mean(list(_foes(m, ln).values())) for ln in inner])
        assert 0.2 < share < 0.8


def test_routes_never_use_a_turn_tighter_than_the_car_can_make(nets):
    raw = import_sumo_net(nets["grid"]).roadmap  # every connection, the turnarounds included
    tight = np.flatnonzero((raw.lane_kind == CONNECTOR_LANE) & (raw.lane_min_radius < 2.5))
    assert len(tight) >= 8  # netgenerate's 180-degree turnarounds
    m = load_map(nets["grid"], map_min_radius())  # as driven: connections tighter than the car's turning circle left out
    conn = m.lane_kind == CONNECTOR_LANE
    assert conn.sum() == (raw.lane_kind == CONNECTOR_LANE).sum() - len(tight)
    circle = min_turn_radius(SimConfig.wheelbase, SimConfig.max_steer, margin=1.0)
    assert m.lane_min_radius[conn].min() >= circle > raw.lane_min_radius[tight].max()
    # The planner, told the radius with its tracking margin, routes around tighter lanes; without
    # it, it takes them.
    rng = np.random.default_rng(0)
    road = np.flatnonzero(raw.lane_kind == 0)
    found = shortcuts = 0
    for a, b in rng.choice(road, (80, 2)):
        seq = astar_lanes(raw, int(a), int(b), min_radius=RADIUS)
        free = astar_lanes(raw, int(a), int(b))
        shortcuts += free is not None and raw.lane_min_radius[free].min() < RADIUS
        if seq:
            found += 1
            assert raw.lane_min_radius[seq].min() >= RADIUS
    assert found >= 8 and shortcuts >= 20
    # Every route of a world on the map keeps the margin.
    from steer.driving.simulator import build_world

    _, pool = build_world(SimConfig(map_path=nets["grid"], n_towns=1, routes_per_town=10))
    assert all(m.lane_min_radius[r.lanes].min() >= RADIUS for r in pool.routes)


def _drive_expert(path, routes, seed=1):
    cfg = DriveEnvConfig(sim=SimConfig(map_path=path, n_towns=1, routes_per_town=routes, seed=seed), obs="none")

    def bind(env):
        driver = ExpertDriver(env.sim)
        bind.sim = env.sim
        return lambda obs: driver.act()

    return evaluate_routes(None, cfg, routes, seed=0, bind=bind, batch=routes)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "spider", "random"])
def test_expert_drives_stock_networks(nets, kind):
    res = _drive_expert(nets[kind], 30)
    faults = {k: int(res[k].sum()) for k in INFRACTIONS}
    assert res["route_completion"].mean() >= 0.95, (res["route_completion"].mean(), faults)
    assert sum(faults.values()) == 0, faults
    # The routes were not trivial: they cross junctions where the driver must give way or stop.
    m = load_map(nets[kind], map_min_radius())
    assert (m.lane_yields.any(1) | (m.lane_light >= 0)).sum() > 20


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """An OpenDRIVE town written by SUMO's netconvert from a netgenerate grid (two lanes each way,
    lights at every junction), so that the test needs no downloaded map."""
    import subprocess

    from steer.driving.maps import _sumo_binary

    d = tmp_path_factory.mktemp("town")
    net = str(d / "town.net.xml")
    subprocess.run([_sumo_binary("netgenerate"), "--grid", "--grid.number", "3", "--grid.length", "110",
                    "--default.lanenumber", "2", "--default-junction-type", "traffic_light", "--seed", "2",
                    "-o", net], check=True, capture_output=True)
    return sumo_to_opendrive(net, str(d / "town.xodr"))


def test_opendrive_town_matches_carla_reading(town):
    carla = pytest.importorskip("carla", reason="the carla client wheel is not installed (Python 3.11)")
    from steer.driving.carla_coords import from_carla, to_carla

    m = load_map(town, map_min_radius())
    cmap = carla.Map("town", open(town).read())
    road = np.flatnonzero(m.lane_kind == 0)
    assert (m.lane_left[road] >= 0).sum() > 10  # multi-lane roads survive as lane-change neighbours
    # Every road lane centre is a CARLA lane centre of the same heading.
    rng = np.random.default_rng(0)
    for ln in rng.choice(road, 30, replace=False):
        p = m.lane_points(ln)[len(m.lane_points(ln)) // 2]
        cx, cy, _ = to_carla(p[0], p[1], 0.0)
        wp = cmap.get_waypoint(carla.Location(float(cx), float(cy), 0.0))
        bx, by, byaw = from_carla(wp.transform.location.x, wp.transform.location.y, wp.transform.rotation.yaw)
        h = m.pt_heading[m.lane_offset[ln] + len(m.lane_points(ln)) // 2]
        assert np.hypot(bx - p[0], by - p[1]) < 0.3
        assert abs((byaw - h + np.pi) % (2 * np.pi) - np.pi) < 0.05
    # Signals: the file's traffic lights (dynamic signals of type 1000001) control our junctions.
    lights = [lm for lm in cmap.get_all_landmarks() if lm.is_dynamic and lm.type == "1000001"]
    assert len(lights) > 0
    lit_groups = np.unique(m.light_group[m.lane_light[m.lane_light >= 0]])
    assert len(lit_groups) == 9  # one light program per junction of the 3 x 3 grid
    assert (m.lane_control[m.lane_kind == CONNECTOR_LANE] == CONTROL_LIGHT).all()


@pytest.mark.slow
def test_expert_drives_the_opendrive_town_and_obeys_its_lights(town):
    cfg = DriveEnvConfig(sim=SimConfig(map_path=town, n_towns=1, routes_per_town=30, seed=1), obs="none")
    from steer.driving.env import DriveVectorEnv

    env = DriveVectorEnv(30, cfg, autoreset=False)
    env.reset(seed=0, options={"routes": np.arange(30)})
    driver = ExpertDriver(env.sim)
    done = np.zeros(30, bool)
    rc = np.zeros(30)
    faults = dict.fromkeys(INFRACTIONS, 0)
    waited = np.zeros(30, bool)
    while not done.all():
        _, _, lgap, lstate = env.sim.route_hazards()
        waited |= (lgap < 5.0) & (lstate == LIGHT_RED) & (env.sim.v < 0.1)
        _, _, term, trunc, info = env.step(driver.act())
        end = (term | trunc) & ~done
        rc[end] = info["route_completion"][end]
        for k in INFRACTIONS:
            faults[k] += int(info[k][end].sum())
        done |= end
    assert rc.mean() >= 0.95, (rc.mean(), faults)
    assert sum(faults.values()) == 0, faults
    assert waited.mean() > 0.3  # it met red lights on many routes and stopped for them


def test_map_file_errors(tmp_path):
    with pytest.raises(MapFileError, match="does not exist"):
        load_map(str(tmp_path / "none.xodr"), map_min_radius())
    (tmp_path / "town.osm").write_text("<osm/>")
    with pytest.raises(MapFileError, match="not a SUMO .net.xml or an OpenDRIVE .xodr"):
        load_map(str(tmp_path / "town.osm"), map_min_radius())
    (tmp_path / "bad.xodr").write_text("<OpenDRIVE><road")
    with pytest.raises(MapFileError, match="cannot be read"):
        load_map_file(str(tmp_path / "bad.xodr"), map_min_radius())
    (tmp_path / "bad.net.xml").write_text("<net><edge")
    with pytest.raises(MapFileError, match="cannot be read"):
        load_map_file(str(tmp_path / "bad.net.xml"), map_min_radius())
