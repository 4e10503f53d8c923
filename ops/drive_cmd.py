"""``steer drive view``: render a driving episode to PNG frames and a GIF.
``steer drive train``: train a CaRL PPO driving policy (also under ``torchrun``).
``steer drive eval``: evaluate a trained policy on held-out routes and towns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from steer.agent.ppo_config import PPOConfig
from steer.agent.runlog import policy_kind


class DriveViewError(Exception):
    """A ``steer drive view`` option the user set cannot work."""

    user_facing = True


@dataclass(frozen=True)
class DriveViewConfig:
    """Options of ``steer drive view``."""

    out: str = "runs/drive_view"
    """Folder for the PNG frames and the GIF (created if missing)."""
    seed: int = 0
    """Seed of the town and of the episode."""
    town_size: int = field(default=3, metadata={"range": "[1, inf)"})
    """Junctions per side of the generated town."""
    steps: int = field(default=300, metadata={"range": "[1, inf)"})
    """Most steps to render (the episode may end earlier)."""
    policy: str = "expert"
    """Who drives: "expert" (the scripted driver) or a run directory of `steer drive train` (its
    deterministic policy, in the env config it was trained with; the picture is then its own BEV)."""
    frames: bool = True
    """Write every frame as a PNG."""
    gif: bool = True
    """Write the episode as ``episode.gif``."""
    bev_size: int = field(default=128, metadata={"range": "[1, inf)"})
    """BEV width and height, pixels."""
    pixels_per_meter: float = field(default=2.0, metadata={"range": "(0, inf)"})
    """BEV resolution."""
    scale: int = field(default=3, metadata={"range": "[1, inf)"})
    """Upscaling of the saved pictures."""


def view(cfg: DriveViewConfig) -> int:
    """Render one episode of the embedded driving simulator to PNG frames and a GIF."""
    ckpt = os.path.join(cfg.policy, "checkpoints")
    if cfg.policy != "expert" and not os.path.exists(os.path.join(ckpt, "last.safetensors")):
        raise DriveViewError(f"--policy must be 'expert' or a run directory of `steer drive train`; "
                             f"{cfg.policy!r} has no checkpoints/last.safetensors.")
    if cfg.steps <= 0 or cfg.town_size < 2 or cfg.bev_size < 16:
        raise DriveViewError("steps must be positive, town-size at least 2 and bev-size at least 16.")
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from steer.driving.bev import BevConfig, bev_to_rgb
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv
    from steer.driving.expert import ExpertDriver
    from steer.driving.simulator import SimConfig
    from steer.driving.town import TownConfig

    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as err:
        raise DriveViewError(f"cannot create the output folder {cfg.out!r} ({err.strerror}).") from err
    ego_row = int(cfg.bev_size * 0.39)
    env_cfg = DriveEnvConfig(
        sim=SimConfig(seed=cfg.seed, n_towns=1, routes_per_town=16, town=TownConfig(nx=cfg.town_size, ny=cfg.town_size)),
        bev=BevConfig(size=cfg.bev_size, pixels_per_meter=cfg.pixels_per_meter, ego_from_bottom=ego_row),
    )
    model = None
    if cfg.policy != "expert":
        import dataclasses

        import torch

        from steer.agent.ppo import load_policy, obs_to_torch

        model, ppo_cfg, _ = load_policy(ckpt)
        # The policy sees the BEV it was trained on; only the town and seed come from this command.
        env_cfg = dataclasses.replace(ppo_cfg.env, sim=dataclasses.replace(env_cfg.sim))
        ego_row = env_cfg.bev.ego_from_bottom
        ego_px = (max(2, int(4.5 * env_cfg.bev.pixels_per_meter)), max(1, int(2.0 * env_cfg.bev.pixels_per_meter)))
    env = DriveVectorEnv(1, env_cfg, autoreset=False)
    obs, _ = env.reset(seed=cfg.seed)
    expert = ExpertDriver(env.sim) if model is None else None

    def act():
        if model is None:
            return expert.act()
        bev, meas, _ = obs_to_torch(obs)
        with torch.no_grad():
            return model.act(bev, meas, deterministic=True).numpy()

    pictures = []
    if model is None:
        ego_px = (max(2, int(4.5 * cfg.pixels_per_meter)), max(1, int(2.0 * cfg.pixels_per_meter)))
    info = {}
    for k in tqdm(range(cfg.steps), desc="drive view", unit="step"):
        img = bev_to_rgb(obs["bev"][0], ego_row, ego_px)
        pic = Image.fromarray(img).resize((img.shape[1] * cfg.scale, img.shape[0] * cfg.scale), Image.NEAREST)
        pictures.append(pic)
        if cfg.frames:
            pic.save(os.path.join(cfg.out, f"frame_{k:04d}.png"))
        obs, _, term, trunc, info = env.step(act())
        if term[0] or trunc[0]:
            break
    if cfg.gif and pictures:
        pictures[0].save(os.path.join(cfg.out, "episode.gif"), save_all=True, append_images=pictures[1:],
                         duration=100, loop=0)
    done = "finished" if info.get("finished", [False])[0] else "stopped"
    print(f"{len(pictures)} frames in {cfg.out}; route completion "
          f"{100 * float(info['route_completion'][0]) if info else 0:.1f} % ({done}).")
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

    def rewind(self, step: int) -> None:
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
    rank, world = setup_distributed()
    check_config(cfg.ppo, world)
    path = cfg.runs / cfg.name
    if cfg.resume and policy_kind(path) != "ppo":
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
        table, result = _evaluate_model(res.model.cpu().eval(), cfg.ppo, cfg.eval_routes, 1_000_003, 4, 0, False)
        summary["eval"] = result["policy"]
        print(table)
    run.finish(summary)
    print(f"trained {res.global_step} steps at {res.sps:.0f} steps/s; run in {path}")
    return 0


@dataclass(frozen=True)
class DriveEvalConfig:
    """Options of ``steer drive eval``."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory made by ``steer drive train``."""
    routes: int = field(default=100, metadata={"range": "[1, inf)"})
    """Held-out routes to drive, each once."""
    towns: int = field(default=4, metadata={"range": "[1, inf)"})
    """Generated towns the held-out routes are spread over."""
    world_seed: int = 1_000_003
    """Seed of the held-out towns and routes (training uses the run's own world seed)."""
    seed: int = 0
    """Seed of traffic and light phases."""
    expert: bool = True
    """Also drive the routes with the scripted expert, as a reference column."""


def _evaluate_model(model, ppo: PPOConfig, routes: int, world_seed: int, towns: int, seed: int, expert: bool):
    import torch

    from steer.agent.driving_score import evaluate_routes, format_table, heldout_env_config, route_summary
    from steer.agent.ppo import obs_to_torch
    from steer.driving.expert import ExpertDriver

    if world_seed == ppo.env.sim.seed:
        raise DriveTrainError(f"world-seed {world_seed} is the training world; choose another for held-out routes.")
    env_cfg = heldout_env_config(ppo.env, n_routes=routes, seed=world_seed, n_towns=towns)
    torch.set_num_threads(max(1, ppo.torch_threads))

    def act(obs):
        bev, meas, _ = obs_to_torch(obs)
        return model.act(bev, meas, deterministic=True).numpy()

    results = {"policy": route_summary(evaluate_routes(act, env_cfg, routes, seed=seed))}
    if expert:
        def expert_for(env):  # the expert reads the simulator state of the env it drives
            driver = ExpertDriver(env.sim)
            return lambda obs: driver.act()

        results["expert"] = route_summary(evaluate_routes(None, env_cfg, routes, seed=seed, bind=expert_for))
    return format_table(results), results


def evaluate(cfg: DriveEvalConfig) -> int:
    """Evaluate a trained driving policy on held-out routes in held-out towns with mean (deterministic)
    actions; print route completion, infractions by type and per km, and the driving score."""
    from steer.agent.checkpoint import CheckpointError
    from steer.agent.runlog import atomic_write_json
    from steer.agent.ppo import load_policy

    if cfg.routes <= 0 or cfg.towns <= 0:
        raise DriveTrainError("routes and towns must be positive.")
    ckpt = cfg.run / "checkpoints"
    if policy_kind(cfg.run) != "ppo":
        raise DriveTrainError(f"{cfg.run} holds no driving policy; pass a run directory made by `steer drive train`.")
    try:
        model, ppo, meta = load_policy(ckpt)
    except (CheckpointError, KeyError) as err:
        raise DriveTrainError(f"the checkpoint in {ckpt} cannot be read ({err}); train the run again.") from err
    table, results = _evaluate_model(model, ppo, cfg.routes, cfg.world_seed, cfg.towns, cfg.seed, cfg.expert)
    print(f"{cfg.run} after {meta['global_step']} steps, {cfg.routes} held-out routes in {cfg.towns} towns:")
    print(table)
    atomic_write_json(cfg.run / "eval.json", {"global_step": meta["global_step"], "routes": cfg.routes,
                                             "towns": cfg.towns, "world_seed": cfg.world_seed, **results})
    return 0
