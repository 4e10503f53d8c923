"""``steer drive view``: render a driving episode to PNG frames and a GIF.
``steer drive train``: train a CaRL PPO driving policy (also under ``torchrun``).
``steer drive eval``: evaluate a trained policy on held-out routes and towns.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from steer.agent.ppo_config import PPOConfig
from steer.ops.drive_stages import EXPERT, DriveStageError, DriveViewConfig, HeldOut, evaluate_drivers, load_ppo_run
from steer.ops.drive_stages import save_episode, view_episode


DriveViewError = DriveStageError
"""A ``steer drive view`` option the user set cannot work."""


def view(cfg: DriveViewConfig) -> int:
    """Render one episode of the embedded driving simulator to PNG frames and a GIF, and say how it ended."""
    if cfg.policy != EXPERT and not os.path.exists(os.path.join(cfg.policy, "checkpoints", "last.safetensors")):
        raise DriveViewError(f"--policy must be 'expert' or a run directory of `steer drive train`; "
                             f"{cfg.policy!r} has no checkpoints/last.safetensors.")
    ep = view_episode(cfg)
    save_episode(ep, cfg.out, cfg.frames, cfg.gif, cfg.scale)
    print(f"{len(ep.pictures)} frames in {cfg.out}; route completion {100 * ep.route_completion:.1f} %; "
          f"ended by: {ep.ended_by}.")
    return 0


class DriveTrainError(Exception):
    """A ``steer drive train`` or ``steer drive eval`` option the user set cannot work."""

    user_facing = True


@dataclass(frozen=True)
class DriveTrainConfig:
    """Options of ``steer drive train``."""

    name: str = "carl"
    """Run name: the run directory is ``<runs>/<name>``."""
    runs: Path = Path("runs")
    """Folder of the run directories."""
    resume: bool = False
    """Continue the run from its last checkpoint."""
    max_minutes: float = 60.0
    """Stop (with a checkpoint) after the first update past this many minutes; 0 trains to
    ``ppo.total_timesteps``."""
    eval_routes: int = 100
    """Held-out routes (in towns never trained on) driven with mean actions at the end; 0 skips."""
    progress: bool = True
    """Show a progress bar."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO, network and driving-env settings."""


class _RankLog:
    """The run-log of ranks other than 0: they share the checkpoint folder and write no metrics."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass


def train(cfg: DriveTrainConfig) -> int:
    """Train a CaRL PPO driving policy on the embedded simulator (route-completion reward by default).

    Runs on all local cores in one process, or under ``torchrun --nproc_per_node N $(which steer) drive
    train ...`` with DistributedDataParallel (each process drives its own envs). Writes metrics,
    TensorBoard events and checkpoints to the run directory, then evaluates on held-out routes.
    """
    from steer.agent.ppo import check_config, setup_distributed, train_ppo
    from steer.ops.run import Run

    if cfg.eval_routes < 0 or cfg.max_minutes < 0:
        raise DriveTrainError("eval-routes and max-minutes must not be negative.")
    from steer.driving.simulator import INFRACTIONS

    rank, world = setup_distributed()
    check_config(cfg.ppo, world, INFRACTIONS)
    path = cfg.runs / cfg.name
    if cfg.resume and not (path / "checkpoints" / "last.safetensors").exists():
        raise DriveTrainError(f"cannot resume {path}: it has no checkpoint yet; start it without --resume.")
    run = Run(path, cfg, kind="ppo", resume=cfg.resume) if rank == 0 else _RankLog(path / "checkpoints")
    try:
        res = train_ppo(cfg.ppo, run, resume=cfg.resume, progress=cfg.progress and rank == 0,
                        time_limit_s=cfg.max_minutes * 60.0 if cfg.max_minutes > 0 else None)
    except BaseException:
        if rank == 0:
            run.close("failed")
        raise
    if rank != 0:
        return 0
    summary = {"global_step": res.global_step, "updates": res.updates, "sps": res.sps, "world_size": world,
               "train_episodes": res.episodes}
    if cfg.eval_routes:
        table, result = evaluate_drivers(cfg.ppo, HeldOut(routes=cfg.eval_routes), res.model.cpu().eval(), expert=False)
        summary["eval"] = result["policy"]
        print(table)
    run.finish(summary)
    print(f"trained {res.global_step} steps at {res.sps:.0f} steps/s; run in {path}")
    return 0


@dataclass(frozen=True)
class DriveEvalConfig:
    """Options of ``steer drive eval``."""

    run: Annotated[Path | None, tyro.conf.Positional] = None
    """Run directory made by ``steer drive train`` (not needed with ``--driver expert``)."""
    driver: str = "policy"
    """``policy`` (the run's, with mean actions) or ``expert`` (the scripted driver alone)."""
    routes: int = 100
    """Held-out routes to drive, each once."""
    towns: int = 4
    """Generated towns the held-out routes are spread over."""
    world_seed: int = 1_000_003
    """Seed of the held-out towns and routes (training uses the run's own world seed)."""
    seed: int = 0
    """Seed of traffic and light phases."""
    town_size: int | None = None
    """Junctions per side of the held-out towns (default: the training towns' size)."""
    traffic: int | None = None
    """Traffic vehicles around each route (default: the training's)."""
    expert: bool = True
    """Also drive the routes with the scripted expert, as a reference column."""


def evaluate(cfg: DriveEvalConfig) -> int:
    """Evaluate a trained driving policy (or the scripted expert) on held-out routes in held-out towns
    with mean (deterministic) actions; print route completion, infractions by type and per km, and the
    driving score."""
    from steer.agent.checkpoint import atomic_write_json

    if cfg.driver not in ("policy", EXPERT):
        raise DriveTrainError(f"--driver must be 'policy' or 'expert', not {cfg.driver!r}.")
    held = HeldOut(cfg.routes, cfg.towns, cfg.world_seed, cfg.seed, cfg.town_size, cfg.traffic)
    if cfg.driver == EXPERT:
        table, results = evaluate_drivers(PPOConfig(), held, None, expert=True)
        print(f"scripted expert, {cfg.routes} held-out routes in {cfg.towns} towns:")
        print(table)
        return 0
    if cfg.run is None:
        raise DriveTrainError("pass a run directory made by `steer drive train`, or --driver expert.")
    model, ppo, meta = load_ppo_run(cfg.run)
    table, results = evaluate_drivers(ppo, held, model, cfg.expert)
    print(f"{cfg.run} after {meta['global_step']} steps, {cfg.routes} held-out routes in {cfg.towns} towns:")
    print(table)
    atomic_write_json(cfg.run / "eval.json", {"global_step": meta["global_step"], **dataclasses.asdict(held),
                                             **results})
    return 0
