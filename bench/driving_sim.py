"""Benchmark: env-steps/s of our driving simulator vs highway-env and libsumo (2-core CPU).

Ours at 1, 64, 256 and 1,024 envs with no observation, the vector observation and the BEV (CPU
default 64 x 64 at 1 px/m, rendered by two threads), the share of step time spent rasterizing, env
steps per CPU-second of the process (``cpu_sps.*``; the machine is shared, so wall-clock figures
depend on its load, recorded beside them), highway-env racetrack and intersection, and libsumo with a
controlled ego on the bundled ``cross`` network (in a subprocess: one libsumo per process). The
peers run interleaved with ours over several repeats; figures are medians. Writes
``bench/results/driving_sim.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def ours(n: int, obs: str, seconds: float = 1.5) -> tuple[float, float, float]:
    """(env-steps/s, share of time in the rasterizer, env-steps per CPU-second) with random-ish actions
    and auto-reset."""
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv

    bev = obs == "bev"
    env = DriveVectorEnv(n, DriveEnvConfig(obs=obs))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    a = np.stack([rng.uniform(-0.1, 0.1, n), rng.uniform(0.0, 0.6, n)], 1).astype(np.float32)
    for _ in range(3):
        env.step(a)
    raster = 0.0
    if bev:
        render = env.bev.render

        def timed(*args, **kw):
            nonlocal raster
            t0 = time.perf_counter()
            out = render(*args, **kw)
            raster += time.perf_counter() - t0
            return out

        env.bev.render = timed
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or steps < 3:
        env.step(a)
        steps += 1
    dt = time.perf_counter() - t0
    return steps * n / dt, raster / dt, steps * n / (time.process_time() - c0)


def highway(name: str, seconds: float = 3.0) -> float:
    """highway-env steps/s (default config, no rendering, random actions)."""
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the envs)

    env = gym.make(f"{name}-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        steps += 1
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def libsumo_sps(seconds: float = 3.0) -> float:
    """libsumo env-steps/s with our ego (moveToXY + setSpeed), traffic and measurement, in a subprocess."""
    code = (
        "import time, numpy as np\n"
        "from steer.driving.sumo_import import import_sumo_net, bundled_network\n"
        "from steer.driving.simulator import world_from_map, SimConfig\n"
        "from steer.driving.sumo_backend import SumoSim\n"
        "from steer.driving.expert import ExpertDriver\n"
        "sm = import_sumo_net(bundled_network('cross'))\n"
        "m, pool = world_from_map(sm.roadmap, 4, seed=0)\n"
        "sim = SumoSim(sm, pool, SimConfig(n_npcs=7, random_light_offsets=False)); ex = ExpertDriver(sim)\n"
        "sim.reset_envs(np.array([0]), np.random.default_rng(0), routes=np.array([0]))\n"
        "k, t0 = 0, time.perf_counter()\n"
        f"while time.perf_counter() - t0 < {seconds}:\n"
        "    r = sim.step(ex.act()); k += 1\n"
        "    if r.finished[0] or r.terminated[0]: sim.reset_envs(np.array([0]), np.random.default_rng(k), routes=np.array([k % 4]))\n"
        "print(k / (time.perf_counter() - t0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])
    return float(out.stdout.strip().splitlines()[-1])


def main(repeats: int = 3, peers: bool = True) -> dict:
    """Run the comparison and write the results file (without ``peers``, their last figures are kept)."""
    sizes = (1, 64, 256, 1024)
    runs: dict[str, list[float]] = {}
    share: list[float] = []
    loads = [os.getloadavg()[0]]

    def add(k, v):
        runs.setdefault(k, []).append(float(v))

    for rep in range(repeats):
        for n in sizes:
            for obs in ("none", "vector", "bev"):
                sps, rs, cpu_sps = ours(n, obs)
                key = {"none": "no_bev"}.get(obs, obs)
                add(f"sps.ours.{n}.{key}", sps)
                add(f"cpu_sps.ours.{n}.{key}", cpu_sps)
                if obs == "bev" and n == 1024:
                    share.append(rs)
        loads.append(os.getloadavg()[0])
        for name in ("racetrack", "intersection") if peers else ():
            try:
                add(f"sps.highway_env.{name}", highway(name))
            except Exception as err:  # noqa: BLE001 - a missing peer is reported, not fatal
                print(f"highway-env {name} failed: {err}", file=sys.stderr)
        try:
            if peers:
                add("sps.libsumo", libsumo_sps())
        except Exception as err:  # noqa: BLE001
            print(f"libsumo failed: {err}", file=sys.stderr)
        print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr)
    figures = {k: float(np.median(v)) for k, v in runs.items()}
    figures["raster_share"] = float(np.median(share))
    if not peers:
        try:
            with open(os.path.join(HERE, "results", "driving_sim.json")) as f:
                old = json.load(f)["figures"]
            figures.update({k: v for k, v in old.items() if k.startswith(("sps.highway_env", "sps.libsumo"))})
        except (OSError, KeyError, ValueError):
            pass
    result = {
        "figures": figures,
        "details": {"runs": runs, "raster_share_runs": share, "repeats": repeats,
                    "bev": "64x64 at 1 px/m, 8 channels, 2 render threads", "npcs_per_env": 7,
                    "load_average_1min": loads, "peers_measured_in_this_run": peers,
                    "note": "ours: numpy, one process; highway-env default configs; libsumo on 'cross' with 7 "
                            "vehicles, the scripted driver and our measurement in the loop"},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            result["machine"]["cpu"] = names[0]
    except OSError:
        pass
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "driving_sim.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'figure':<34}{'median':>14}")
    for k, v in figures.items():
        print(f"{k:<34}{v:>14.3f}" if k == "raster_share" else f"{k:<34}{v:>14,.0f}")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, peers="--ours-only" not in sys.argv)
