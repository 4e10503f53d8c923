"""Benchmark: how fast `steer drive train` learns to drive, vector observation vs BEV, several seeds.

Each run is `steer drive train` with its defaults (the vector observation and the MLP) or with
``--ppo.env.obs bev`` (CaRL's observation and CNN), stopped after ``DRIVE_MINUTES`` of wall clock or
``DRIVE_STEPS`` env steps, whichever comes first. Copies of the policy kept every
``DRIVE_CURVE_MINUTES`` drive 100 held-out routes in 4 towns generated from a seed never trained on
(traffic and lights as in training) with mean actions: route completion and driving score against
wall-clock minutes and env steps. The figures are those of the copy each run keeps (``steer drive
train --keep-best``: the best on a validation world of its own). The scripted expert drives the same routes.

Figures (medians over seeds): ``rc.vector``, ``ds.vector`` (the kept policy), ``rc_fresh.vector``,
``ds_fresh.vector`` (the kept policy on a second held-out world that no setting was chosen on),
``rc_compact.vector``, ``ds_compact.vector``, ``rc_wide.vector``, ``ds_wide.vector`` (the usual held-out routes
with every junction 1 m or 5 m beyond its widest road: the ends of the range training draws from),
``per_km.<infraction>.vector`` and ``per_km_fresh.…`` (infractions per km by type), ``minutes_to_0.9.vector``
and ``steps_to_0.9.vector`` (first curve point with held-out route completion >= 0.9; null if none),
``sps.vector`` (the run's own env-steps/s, rollout and update), ``sps_per_cpu.vector`` (env steps
per CPU-second of the training process: the machine is shared, so wall-clock figures depend on the
load, recorded beside them), red-light and collision infractions per km, the same for ``bev``, and
the expert's. Writes ``bench/results/drive_learning.json`` and ``bench/results/drive_learning.png``.

Knobs (environment): ``DRIVE_SEEDS`` (3), ``DRIVE_SETTINGS`` ("vector,bev"), ``DRIVE_MINUTES``
(30), ``DRIVE_STEPS`` (0: no step limit), ``DRIVE_CURVE_MINUTES`` (3), ``DRIVE_PARALLEL`` (runs at
once, 1), ``DRIVE_PROCESSES`` (training processes per run; 0: the trainer's default, 2),
``DRIVE_BEV_SEEDS`` (as many as ``DRIVE_SEEDS``), ``DRIVE_RUNS`` (run directories, a temporary folder).

A run of some settings keeps the records of the other settings already in the results file, so the
settings can be measured at different times (``DRIVE_SETTINGS=bev`` adds BEV beside the vector
figures); each record carries the date and the settings of its run (minutes, runs at once,
processes per run).

    DRIVE_SETTINGS=vector python bench/drive_learning.py
    DRIVE_SETTINGS=bev DRIVE_SEEDS=1 python bench/drive_learning.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = int(os.environ.get("DRIVE_SEEDS", "3"))
SETTINGS = os.environ.get("DRIVE_SETTINGS", "vector,bev").split(",")
MINUTES = float(os.environ.get("DRIVE_MINUTES", "30"))
STEPS = int(os.environ.get("DRIVE_STEPS", "0"))
CURVE_MINUTES = float(os.environ.get("DRIVE_CURVE_MINUTES", "3"))
PARALLEL = int(os.environ.get("DRIVE_PARALLEL", "1"))
PROCESSES = int(os.environ.get("DRIVE_PROCESSES", "0"))
"""Training processes per run (0: the trainer's default)."""
BEV_SEEDS = int(os.environ.get("DRIVE_BEV_SEEDS", str(SEEDS)))


def train_config(setting: str, seed: int, runs: Path):
    from steer.ops.drive_stages import DriveTrainConfig

    base = DriveTrainConfig()
    ppo = dataclasses.replace(base.ppo, seed=seed)
    if setting == "bev":
        ppo = dataclasses.replace(ppo, env=dataclasses.replace(ppo.env, obs="bev"))
    if STEPS:
        ppo = dataclasses.replace(ppo, total_timesteps=STEPS)
    return DriveTrainConfig(name=f"{setting}-seed{seed}", runs=runs, max_minutes=MINUTES,
                            curve_every_minutes=CURVE_MINUTES, progress=False, ppo=ppo,
                            processes=PROCESSES or base.processes)


def one_run(setting: str, seed: int, runs: str) -> dict:
    """Train one seed of one setting; its held-out curve and final figures."""
    import torch

    from steer.ops.drive_stages import HeldOut, train_driving_local
    from steer.ops.run import read_metrics

    cfg = train_config(setting, seed, Path(runs))
    torch.set_num_threads(max(1, cfg.ppo.torch_threads))
    load_before = os.getloadavg()[0]
    out = train_driving_local(cfg)
    curve = [{"step": r["step"], "minutes": r["eval/minutes"], "rc": r["eval/route_completion"],
              "ds": r["eval/driving_score"]}
             for r in read_metrics(out.path / "metrics.jsonl") if "eval/route_completion" in r]
    curve.sort(key=lambda c: c["step"])
    hit = next((c for c in curve if c["rc"] >= 0.9), None)
    ev = out.summary["eval"]
    worlds = {"fresh": HeldOut(world_seed=FRESH_WORLD_SEED),
              **{size: HeldOut(junction_margin=margin) for size, margin in JUNCTION_SIZES.items()}}
    sized = kept_evals(out.path, worlds)
    fresh = sized.pop("fresh")
    rates = _per_km(ev)
    return {"setting": setting, "seed": seed, "rc": ev["route_completion"], "ds": ev["driving_score"],
            "rc_fresh": fresh["route_completion"], "ds_fresh": fresh["driving_score"],
            **{f"{k}_{size}": res[name] for size, res in sized.items()
               for k, name in (("rc", "route_completion"), ("ds", "driving_score"))},
            "per_km_junctions": {size: _per_km(res) for size, res in sized.items()},
            "per_km": rates, "per_km_fresh": _per_km(fresh),
            "red_light_per_km": rates["red_light"], "collision_per_km": rates["collision_vehicle"],
            "infractions_per_km": ev["infractions/total_per_km"], "sps": out.sps,
            "sps_per_cpu": out.summary["sps_per_cpu"], "steps": out.global_step, "minutes": out.summary["minutes"],
            "minutes_to_0.9": hit["minutes"] if hit else None, "steps_to_0.9": hit["step"] if hit else None,
            "curve": curve, "load_average": [load_before, os.getloadavg()[0]], "run": out.path.name}


FRESH_WORLD_SEED = 2_000_003
"""A second held-out world, used by nothing else: the settings were chosen looking at the usual held-out
routes (world seed 1000003), so the final policies also drive 100 routes in 4 towns nobody looked at."""


JUNCTION_SIZES = {"compact": 1.0, "wide": 5.0}
"""The usual held-out routes with every junction 1 m (compact, like SUMO's) or 5 m (wide, like every
training town before the margins were drawn) beyond its widest road: the ends of the training range."""


def kept_evals(run: Path, worlds: dict) -> dict:
    """The kept policy of ``run`` (loaded once) on each named held-out world."""
    from steer.ops.drive_stages import evaluate_drivers, load_ppo_run

    model, cfg, _ = load_ppo_run(run)
    return {name: evaluate_drivers(cfg, held, model, expert=False)[1]["policy"] for name, held in worlds.items()}


def _per_km(ev: dict) -> dict:
    """Infractions per km by type (None: no distance driven)."""
    from steer.driving.simulator import INFRACTIONS

    return {k: ev.get(f"infractions/{k}_per_km") for k in INFRACTIONS}


def expert_row() -> dict:
    from steer.ops.drive_stages import DriveTrainConfig, HeldOut, evaluate_drivers

    ev, fresh = (evaluate_drivers(DriveTrainConfig().ppo, held, None, expert=True)[1]["expert"]
                 for held in (HeldOut(), HeldOut(world_seed=FRESH_WORLD_SEED)))
    return {"rc": ev["route_completion"], "ds": ev["driving_score"],
            "rc_fresh": fresh["route_completion"], "ds_fresh": fresh["driving_score"],
            "red_light_per_km": ev["infractions/red_light_per_km"],
            "collision_per_km": ev["infractions/collision_vehicle_per_km"],
            "infractions_per_km": ev["infractions/total_per_km"]}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def plot(records: list[dict], expert: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    colors = {"vector": "#1f4e9c", "bev": "#c0392b"}
    for r in records:
        for ax, key in ((axes[0], "minutes"), (axes[1], "step")):
            xs = [c[key] for c in r["curve"]]
            ax.plot(xs, [c["rc"] for c in r["curve"]], "o-", color=colors.get(r["setting"], "k"), ms=3, lw=1.5,
                    label=f"{r['setting']} route completion" if r["seed"] == 0 else None)
            ax.plot(xs, [c["ds"] for c in r["curve"]], "s--", color=colors.get(r["setting"], "k"), ms=3, lw=1,
                    alpha=0.6, label=f"{r['setting']} driving score" if r["seed"] == 0 else None)
    for ax, label in ((axes[0], "wall-clock minutes (shared 2-core CPU)"), (axes[1], "env steps")):
        ax.axhline(expert["rc"], color="#1f7a1f", ls=":", lw=1.5, label="scripted expert, route completion")
        ax.axhline(0.9, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("100 held-out routes in unseen towns")
    axes[0].set_title("steer drive train: held-out route completion and driving score")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def kept_records(path: str, settings: list[str]) -> list[dict]:
    """The records of the results file at ``path`` whose setting is not among ``settings`` (measured
    before and not re-run now); each keeps the date of the run it came from."""
    if not os.path.exists(path):
        return []
    doc = json.loads(Path(path).read_text())
    det = doc.get("details", {})
    run_keys = {"date": doc.get("date"), "max_minutes": det.get("max_minutes"),
                "parallel_runs": det.get("parallel_runs"), "processes_per_run": det.get("processes_per_run")}
    return [{**run_keys, **r} for r in det.get("records", []) if r["setting"] not in settings]


def main() -> int:
    import datetime

    from benchlib import write_results

    unknown = [s for s in SETTINGS if s not in ("vector", "bev")]
    if unknown or SEEDS < 1:
        print(f"DRIVE_SETTINGS={','.join(SETTINGS)} DRIVE_SEEDS={SEEDS}: expected settings among vector and bev, "
              "and at least 1 seed.")
        return 2
    runs = os.environ.get("DRIVE_RUNS") or tempfile.mkdtemp(prefix="drive_learning_")
    jobs = [(s, seed) for seed in range(SEEDS) for s in SETTINGS if s != "bev" or seed < BEV_SEEDS]
    if PARALLEL > 1:
        with ProcessPoolExecutor(PARALLEL) as pool:
            records = list(pool.map(one_run, *zip(*jobs), [runs] * len(jobs)))
    else:
        records = [one_run(s, seed, runs) for s, seed in jobs]
    today = datetime.date.today().isoformat()
    records = [{**r, "date": today, "max_minutes": MINUTES, "parallel_runs": PARALLEL,
                "processes_per_run": PROCESSES or "default"} for r in records]
    out_json = os.path.join(HERE, "results", "drive_learning.json")
    kept = kept_records(out_json, SETTINGS)
    for r in records:
        print(f"{r['setting']:6s} seed {r['seed']}: rc {r['rc']:.3f} ds {r['ds']:.3f} after {r['steps']} steps, "
              f"{r['minutes']:.1f} min, {r['sps']:.0f} steps/s ({r['sps_per_cpu']:.0f} per CPU-second); "
              f"rc >= 0.9 after {r['minutes_to_0.9']} min", flush=True)
    expert = expert_row()
    records = kept + records
    settings = [s for s in ("vector", "bev") if any(r["setting"] == s for r in records)]
    figures: dict[str, float | None] = {}
    for s in settings:
        rs = [r for r in records if r["setting"] == s]
        for k in ("rc", "ds", "rc_fresh", "ds_fresh", *(f"{k}_{size}" for size in JUNCTION_SIZES for k in ("rc", "ds")),
                  "minutes_to_0.9", "steps_to_0.9", "sps", "sps_per_cpu",
                  "red_light_per_km",
                  "collision_per_km", "infractions_per_km", "steps", "minutes"):
            figures[f"{k}.{s}"] = _median([r.get(k) for r in rs])
        figures[f"reached_0.9.{s}"] = sum(r["minutes_to_0.9"] is not None for r in rs)
        for kind in ("per_km", "per_km_fresh"):
            for k in rs[0][kind] if rs else ():
                figures[f"{kind}.{k}.{s}"] = _median([r[kind][k] for r in rs])
        for size in JUNCTION_SIZES:
            sized = [r["per_km_junctions"][size] for r in rs if "per_km_junctions" in r]
            for k in sized[0] if sized else ():
                figures[f"per_km_{size}.{k}.{s}"] = _median([x[k] for x in sized])
    for k, v in expert.items():
        figures[f"{k}.expert"] = v
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    plot(records, expert, os.path.join(HERE, "results", "drive_learning.png"))
    write_results(out_json, figures,
                  {"records": records, "settings": settings,
                   "seeds": {s: sorted(r["seed"] for r in records if r["setting"] == s) for s in settings},
                   "run_now": SETTINGS, "max_steps": STEPS, "curve_every_minutes": CURVE_MINUTES,
                   "heldout": "100 routes, 4 towns from world seed 1000003, traffic, lights and junction sizes as in training",
                   "load_average_at_end": os.getloadavg()})
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
