"""``steer drive view``: render a driving episode to PNG frames and a GIF.
``steer drive train``: train a CaRL PPO driving policy (also under ``torchrun``).
``steer drive eval``: evaluate a trained policy (or the scripted expert) on held-out routes and towns.

Each parses its options, calls a stage of :mod:`steer.ops.drive_stages` and prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from steer.agent.ppo_config import PPOConfig
from steer.ops.drive_stages import (
    EXPERT, DriveStageError, DriveTrainConfig, DriveViewConfig, HeldOut, evaluate_drivers, load_ppo_run, save_episode,
    train_driving_local, view_episode,
)

DriveViewError = DriveStageError
"""A ``steer drive view`` option the user set cannot work."""


def view(cfg: DriveViewConfig) -> int:
    """Render one episode of the embedded driving simulator to PNG frames and a GIF, and say how it ended."""
    ep = view_episode(cfg)
    save_episode(ep, cfg.out, cfg.frames, cfg.gif, cfg.scale)
    print(f"{len(ep.pictures)} frames in {cfg.out}; route completion {100 * ep.route_completion:.1f} %; "
          f"ended by: {ep.ended_by}.")
    return 0


DriveTrainError = DriveStageError
"""A ``steer drive train`` or ``steer drive eval`` option the user set cannot work."""


def train(cfg: DriveTrainConfig) -> int:
    """Train a CaRL PPO driving policy on the embedded simulator (route-completion reward by default).

    Runs in ``--processes`` local processes (two by default: DistributedDataParallel over gloo, each
    process drives its share of the envs), or under ``torchrun --nproc_per_node N $(which steer) drive
    train ...`` across machines. Writes metrics, TensorBoard events, checkpoints and ``report.png``
    (held-out route completion and driving score against minutes and env steps) to the run directory,
    keeps the policy copy that drove best on a validation world (``--no-keep-best``: the last one), then
    evaluates it on held-out routes.
    """
    out = train_driving_local(cfg)
    if out is None:  # ranks other than 0
        return 0
    if out.table:
        print(out.table)
    kept = out.summary.get("kept")
    if kept and kept["policy"] == "best":
        print(f"kept the policy of step {kept['step']} ({kept['minutes']:.1f} min), the best on the validation "
              "world (checkpoints/kept)")
    print(f"trained {out.global_step} steps at {out.sps:.0f} steps/s; run in {out.path}")
    return 0


@dataclass(frozen=True)
class DriveEvalConfig:
    """Options of ``steer drive eval``."""

    run: Annotated[Path | None, tyro.conf.Positional] = None
    """Run directory made by ``steer drive train`` (not needed with ``--driver expert``)."""
    driver: str = "policy"
    """``policy`` (the run's, with mean actions) or ``expert`` (the scripted driver alone)."""
    routes: int = field(default=100, metadata={"range": "[1, inf)"})
    """Held-out routes to drive, each once."""
    towns: int = field(default=4, metadata={"range": "[1, inf)"})
    """Generated towns the held-out routes are spread over."""
    world_seed: int = 1_000_003
    """Seed of the held-out towns and routes (training uses the run's own world seed)."""
    seed: int = 0
    """Seed of traffic and light phases."""
    town_size: int | None = None
    """Junctions per side of the held-out towns (default: the training towns' size)."""
    traffic: int | None = None
    """Traffic vehicles around each route (default: the training's)."""
    junction_margin: float | None = None
    """Every held-out junction reaches this far (m) beyond its widest road (default: the training's, drawn
    per junction): 1 gives compact junctions like SUMO's, 5 wide ones."""
    expert: bool = True
    """Also drive the routes with the scripted expert, as a reference column."""
    map: str = ""
    """Drive the held-out routes on a map file instead of generated towns: a SUMO network (``.net.xml``)
    or an OpenDRIVE town (``.xodr``)."""
    backend: str = "embedded"
    """``embedded`` (our simulator) or ``carla``: drive on a CARLA server (its map, physics, traffic and
    lights, synchronous at the simulator's step) at ``--host``/``--port``."""
    host: str = "localhost"
    """CARLA server host (``--backend carla``)."""
    port: int = 2000
    """CARLA server RPC port (``--backend carla``)."""
    out: Path | None = None
    """Also write the table as JSON here (per driver: mean route_completion, driving_score and the
    count and per-km rate of each infraction type)."""


def evaluate(cfg: DriveEvalConfig) -> int:
    """Evaluate a trained driving policy (or the scripted expert) on held-out routes in held-out towns
    with mean (deterministic) actions; print route completion, infractions by type and per km, and the
    driving score."""
    from steer.agent.runlog import atomic_write_json

    if cfg.driver not in ("policy", EXPERT):
        raise DriveTrainError(f"--driver must be 'policy' or 'expert', not {cfg.driver!r}.")
    held = HeldOut(cfg.routes, cfg.towns, cfg.world_seed, cfg.seed, cfg.town_size, cfg.traffic, cfg.map, cfg.backend,
                   cfg.host, cfg.port, cfg.junction_margin)
    where = (f"on the CARLA server at {cfg.host}:{cfg.port}" if cfg.backend == "carla" else
             f"on {cfg.map}" if cfg.map else f"in {cfg.towns} towns")
    if cfg.out is not None and (cfg.out.is_dir() or not cfg.out.parent.is_dir()):
        raise DriveTrainError(f"--out {cfg.out} must be a file in an existing folder.")
    if cfg.driver == EXPERT:
        table, results = evaluate_drivers(PPOConfig(), held, None, expert=True)
        print(f"scripted expert, {cfg.routes} held-out routes {where}:")
        print(table)
        if cfg.out is not None:
            atomic_write_json(cfg.out, {**dataclasses.asdict(held), **results})
        return 0
    if cfg.run is None:
        raise DriveTrainError("pass a run directory made by `steer drive train`, or --driver expert.")
    model, ppo, meta = load_ppo_run(cfg.run)
    table, results = evaluate_drivers(ppo, held, model, cfg.expert)
    print(f"{cfg.run} after {meta['global_step']} steps, {cfg.routes} held-out routes {where}:")
    print(table)
    record = {"global_step": meta["global_step"], **dataclasses.asdict(held), **results}
    atomic_write_json(cfg.run / "eval.json", record)
    if cfg.out is not None:
        atomic_write_json(cfg.out, record)
    return 0
