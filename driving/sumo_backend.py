"""SUMO backend over libsumo: SUMO moves the traffic and runs the lights, we move the ego.

:class:`SumoSim` has the state arrays of :class:`~steer.driving.simulator.DrivingSim` and reuses its
measurement (route completion, infractions), so the observation, the rewards and the scripted driver
work unchanged; wrap it with ``DriveVectorEnv(1, config, sim=SumoSim(...))``. Each step the ego's
bicycle pose goes to SUMO with ``vehicle.moveToXY(..., keepRoute=2)`` and ``setSpeed``; traffic poses
are read back (SUMO reports the front bumper; we use box centres) and the light states are SUMO's
own. libsumo runs one simulation per process: run a second one in a subprocess.

``python -m steer.driving.sumo_backend`` runs the agreement check between this backend and the
embedded simulator on the same network and prints it as JSON (the tests call it in a subprocess).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from steer.driving.roadmap import LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED, LIGHT_YELLOW
from steer.driving.simulator import DrivingSim, SimConfig
from steer.driving.sumo_import import SumoMap, import_sumo_net
from steer.driving.routes import RoutePool

# Read as sumo_import reads a program ("g": permissive green, with the junction's right of way).
_CODE = {"G": LIGHT_GREEN, "g": LIGHT_GREEN_YIELD, "y": LIGHT_YELLOW, "Y": LIGHT_YELLOW, "o": LIGHT_GREEN,
         "O": LIGHT_GREEN}
_STARTED = [False]


class SumoSim(DrivingSim):
    """One episode at a time in libsumo, with the embedded simulator's state arrays and checks."""

    def __init__(self, smap: SumoMap, pool: RoutePool, cfg: SimConfig = SimConfig(), seed: int = 0):
        super().__init__(1, cfg, world=(smap.roadmap, pool))
        self.smap = smap
        self.seed = seed
        self._live = np.zeros(max(smap.roadmap.n_lights, 1), np.int64)
        self._npc_ids: list[str] = []

    # -------------------------------------------------------------- lifecycle
    def _sumo_args(self) -> list[str]:
        return ["sumo", "-n", self.smap.net_path, "--step-length", str(self.cfg.dt), "--no-step-log", "true",
                "--no-warnings", "true", "--collision.action", "warn", "--collision.check-junctions", "true",
                "--seed", str(self.seed), "--begin", "0"]

    def reset_envs(self, idx, rng=None, routes=None) -> None:
        """Start (or reload) SUMO, insert the ego on its route and ``n_npcs`` traffic vehicles."""
        import libsumo as ts

        rng = self.rng if rng is None else rng
        if _STARTED[0]:
            ts.load(self._sumo_args()[1:])
        else:
            ts.start(self._sumo_args())
            _STARTED[0] = True
        k = self.cfg.n_npcs
        super().reset_envs(np.array([0]), rng, routes=routes)
        m, pool, r = self.map, self.pool, self.route[0]
        ts.vehicletype.copy("DEFAULT_VEHTYPE", "steer_car")
        ts.vehicletype.setLength("steer_car", self.cfg.vehicle_length)
        ts.vehicletype.setWidth("steer_car", self.cfg.vehicle_width)
        ts.vehicletype.setMinGap("steer_car", 2.0)
        edges = []
        for lane in pool.routes[r].lanes:
            e = self.smap.lane_edge[lane]
            if e and (not edges or edges[-1] != e):
                edges.append(e)
        ts.route.add("ego_route", edges)
        ts.vehicle.add("ego", "ego_route", typeID="steer_car", depart="now", departSpeed="0")
        ts.vehicle.setSpeedMode("ego", 0)
        self._place_ego()
        # Traffic: random routes between normal edges, inserted where SUMO finds room.
        import sumolib

        net = sumolib.net.readNet(self.smap.net_path)
        normal = [e for e in net.getEdges() if e.getFunction() == ""]
        self._npc_ids = []
        tries = 0
        while len(self._npc_ids) < k and tries < 50 * max(k, 1):
            tries += 1
            a, b = rng.choice(len(normal), 2, replace=False)
            path, _ = net.getShortestPath(normal[a], normal[b])
            if not path or normal[a].getID() == edges[0]:  # never insert onto the ego
                continue
            vid = f"npc{len(self._npc_ids)}"
            ts.route.add(f"r_{vid}", [e.getID() for e in path])
            ts.vehicle.add(vid, f"r_{vid}", typeID="steer_car", depart="now", departPos="random_free",
                           departSpeed="random")
            self._npc_ids.append(vid)
        ts.simulationStep()
        self._read_world()
        self.t[0] = 0.0

    def close(self) -> None:
        """End the SUMO simulation."""
        import libsumo as ts

        if _STARTED[0]:
            ts.close()
            _STARTED[0] = False

    # -------------------------------------------------------------- stepping
    def _place_ego(self) -> None:
        import libsumo as ts

        h = self.cfg.vehicle_length / 2.0
        fx = self.x[0] + h * np.cos(self.yaw[0])
        fy = self.y[0] + h * np.sin(self.yaw[0])
        angle = (90.0 - np.degrees(self.yaw[0])) % 360.0  # SUMO: degrees clockwise from north
        ts.vehicle.moveToXY("ego", "", -1, float(fx), float(fy), angle=float(angle), keepRoute=2)
        ts.vehicle.setSpeed("ego", float(self.v[0]))

    def _read_world(self) -> None:
        import libsumo as ts

        present = set(ts.vehicle.getIDList())
        for i, vid in enumerate(self._npc_ids):
            if vid in present:
                fx, fy = ts.vehicle.getPosition(vid)
                yaw = np.radians(90.0 - ts.vehicle.getAngle(vid))
                ln = ts.vehicle.getLength(vid)
                self.nx[0, i] = fx - ln / 2.0 * np.cos(yaw)
                self.ny[0, i] = fy - ln / 2.0 * np.sin(yaw)
                self.nyaw[0, i] = yaw
                self.n_v[0, i] = ts.vehicle.getSpeed(vid)
                self.n_len[0, i] = ln
                self.n_wid[0, i] = ts.vehicle.getWidth(vid)
            else:  # not inserted yet or arrived: far away
                self.nx[0, i] = self.ny[0, i] = 1e6
                self.n_v[0, i] = 0.0
        cache = {}
        for li, (tls, link) in enumerate(self.smap.light_links):
            if tls not in cache:
                cache[tls] = ts.trafficlight.getRedYellowGreenState(tls)
            self._live[li] = _CODE.get(cache[tls][link], LIGHT_RED)

    def _advance(self, action) -> None:
        import libsumo as ts

        self._ego_step(action)
        self._place_ego()
        ts.simulationStep()
        self.t = self.t + self.cfg.dt
        self.steps += 1
        self._read_world()
        self.sumo_collision = "ego" in ts.simulation.getCollidingVehiclesIDList()

    def _light_states_at(self, env: np.ndarray, light: np.ndarray) -> np.ndarray:
        """SUMO's live states of ``light`` ids (every light query of the simulator comes here)."""
        return np.where(light >= 0, self._live[np.maximum(light, 0)], -1)


# ---------------------------------------------------------------------- agreement check
def _drive(sim: DrivingSim, blind: bool, max_steps: int = 2500) -> dict:
    """Drive one episode with the scripted driver (or a light-blind cruise at 8 m/s)."""
    from steer.driving.expert import ExpertDriver

    ex = ExpertDriver(sim)
    out = {"red_light_step": None, "collision_step": None, "finished": False, "completion": 0.0, "steps": 0}
    for k in range(max_steps):
        a = ex.act()
        if blind:
            a[:, 1] = np.clip((8.0 - sim.v) * 0.5, -1.0, 1.0)
        res = sim.step(a)
        if res.infractions["red_light"][0] and out["red_light_step"] is None:
            out["red_light_step"] = k
        coll = res.infractions["collision_vehicle"][0] or getattr(sim, "sumo_collision", False)
        if coll and out["collision_step"] is None:
            out["collision_step"] = k
        out["completion"] = float(res.route_completion[0])
        out["steps"] = k + 1
        if res.finished[0]:
            out["finished"] = True
            break
        if res.terminated[0] and not res.infractions["red_light"][0]:
            break
    return out


def agreement_report(net_path: str | None = None, n_routes: int = 4, n_npcs: int = 4, seed: int = 0) -> dict:
    """Drive the same routes in the embedded simulator and in SUMO on the same network.

    Per route: the scripted driver with traffic in both (completion, collisions, red lights), a
    light-blind driver without traffic in both (the step at which each detects a red light), and
    the number of steps at which the imported light schedule differed from SUMO's live state.
    """
    from steer.driving.simulator import world_from_map
    from steer.driving.sumo_import import bundled_network

    smap = import_sumo_net(net_path or bundled_network("cross"))
    m, pool = world_from_map(smap.roadmap, n_routes, seed=seed, min_length=150.0, max_length=450.0)
    report = []
    for r in range(n_routes):
        row = {"route": r, "length": float(pool.length[r])}
        for blind in (False, True):
            k = 0 if blind else n_npcs
            cfg = SimConfig(n_npcs=k, random_light_offsets=False, seed=seed)
            ours = DrivingSim(1, cfg, world=(m, pool))
            ours.reset_envs(np.array([0]), np.random.default_rng(seed), routes=np.array([r]))
            sumo = SumoSim(smap, pool, cfg, seed=seed)
            sumo.reset_envs(np.array([0]), np.random.default_rng(seed), routes=np.array([r]))
            mismatch = 0
            if blind:
                # Compare the imported schedule with SUMO's lights while driving.
                for _ in range(300):
                    sumo.step(np.zeros((1, 2), np.float32))
                    ours.step(np.zeros((1, 2), np.float32))
                    mine = ours.light_states(np.arange(m.n_lights)[None])[0]
                    mismatch += int((mine != sumo._live[: m.n_lights]).any())
                ours.reset_envs(np.array([0]), np.random.default_rng(seed), routes=np.array([r]))
                sumo.reset_envs(np.array([0]), np.random.default_rng(seed), routes=np.array([r]))
            tag = "blind" if blind else "expert"
            row[tag] = {"ours": _drive(ours, blind), "sumo": _drive(sumo, blind)}
            if blind:
                row["light_mismatch_steps"] = mismatch
        report.append(row)
    return {"net": smap.net_path, "routes": report}


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    print(json.dumps(agreement_report(args.get("net"), int(args.get("n_routes", 4)), int(args.get("n_npcs", 4)),
                                      int(args.get("seed", 0)))))
