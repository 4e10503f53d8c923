"""Driving stages as plain code: render one episode (``steer drive view``) and evaluate drivers on
held-out routes (``steer drive eval`` and the end of ``steer drive train``). The CLI module only parses
options, calls these and prints."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from steer.agent.ppo_config import PPOConfig

EXPERT = "expert"
"""Name of the scripted driver wherever a driver is chosen."""


class DriveStageError(Exception):
    """A driving option the user set cannot work (one sentence, exit 2)."""

    user_facing = True


@dataclass(frozen=True)
class DriveViewConfig:
    """Options of ``steer drive view``."""

    out: str = "runs/drive_view"
    """Folder for the PNG frames and the GIF (created if missing)."""
    seed: int = 0
    """Seed of the town and of the episode."""
    town_size: int = 3
    """Junctions per side of the generated town."""
    steps: int = 300
    """Most steps to render (the episode may end earlier)."""
    policy: str = EXPERT
    """Who drives: "expert" (the scripted driver) or a run directory of `steer drive train` (its
    deterministic policy, with the observation it was trained on)."""
    map: str = ""
    """A map file to drive instead of a generated town: a SUMO network (``.net.xml``) or an OpenDRIVE
    town (``.xodr``); ``--seed`` then picks the route."""
    frames: bool = True
    """Write every frame as a PNG."""
    gif: bool = True
    """Write the episode as ``episode.gif``."""
    bev_size: int = 128
    """Picture width and height, pixels."""
    pixels_per_meter: float = 2.0
    """Picture resolution."""
    ego_row_share: float = 0.39
    """Share of the picture's height below the ego (more road ahead than behind)."""
    scale: int = 3
    """Upscaling of the saved pictures."""


@dataclass
class EpisodeView:
    """What :func:`view_episode` drove and drew."""

    pictures: list[np.ndarray]
    """RGB frames [H, W, 3], one per step before the action."""
    route_completion: float
    """Share of the route done at the end (0..1)."""
    ended_by: str
    """Why the episode ended: ``finished``, an infraction flag (e.g. ``red_light``) or ``step_limit``."""
    frame_ms: int
    """Duration of one frame in real time (the simulator's step)."""


def check_map(path: str) -> None:
    """One-sentence error for a ``--map`` file that is missing or of an unsupported kind ("" is none)."""
    if not path:
        return
    from steer.driving.maps import MapFileError, map_kind

    try:
        map_kind(path)
    except MapFileError as err:
        raise DriveStageError(str(err)) from err


def ended_by(info: dict[str, np.ndarray], infractions: tuple[str, ...], row: int = 0) -> str:
    """Why env ``row``'s episode ended, from the infos of its last step."""
    if bool(info.get("finished", [False])[row]):
        return "finished"
    hit = [k for k in infractions if bool(info[k][row])]
    return hit[0] if hit else "step_limit"


def load_ppo_run(run: Path):
    """(model, PPOConfig) of a ``steer drive train`` run directory, or a one-sentence error."""
    from steer.agent.checkpoint import CheckpointError
    from steer.agent.ppo import load_policy

    ckpt = Path(run) / "checkpoints"
    if not (ckpt / "last.safetensors").exists():
        raise DriveStageError(f"{run} holds no driving policy; pass 'expert' or a run directory made by "
                              f"`steer drive train` (it needs checkpoints/last.safetensors).")
    try:
        model, cfg, meta = load_policy(ckpt)
    except (CheckpointError, KeyError) as err:
        raise DriveStageError(f"the checkpoint in {ckpt} cannot be read ({err}); train the run again.") from err
    return model, cfg, meta


def policy_actor(model) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Deterministic (Beta-mean) actions of a PPO model from a vector-env observation."""
    import torch

    from steer.agent.ppo import obs_to_torch

    def act(obs):
        with torch.no_grad():
            return model.act(obs_to_torch(obs), deterministic=True).numpy()

    return act


def view_episode(cfg: DriveViewConfig) -> EpisodeView:
    """Drive one episode in a generated town with the expert or a trained policy, drawing a BEV picture per step."""
    if cfg.steps <= 0 or cfg.town_size < 2 or cfg.bev_size < 16:
        raise DriveStageError("steps must be positive, town-size at least 2 and bev-size at least 16.")
    from steer.driving.bev import BevConfig, BevRenderer, bev_to_rgb
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv
    from steer.driving.expert import ExpertDriver
    from steer.driving.simulator import SimConfig
    from steer.driving.town import TownConfig

    check_map(cfg.map)
    sim = SimConfig(seed=cfg.seed, n_towns=1, routes_per_town=16, town=TownConfig(nx=cfg.town_size, ny=cfg.town_size),
                    map_path=cfg.map)
    env_cfg, act = DriveEnvConfig(sim=sim, obs="none"), None
    if cfg.policy != EXPERT:
        model, ppo_cfg, _ = load_ppo_run(Path(cfg.policy))
        # The policy sees the observation it was trained on; only the town and seed come from here.
        env_cfg = dataclasses.replace(ppo_cfg.env, sim=sim)
        act = policy_actor(model)
    env = DriveVectorEnv(1, env_cfg, autoreset=False)
    obs, _ = env.reset(seed=cfg.seed)
    if act is None:
        expert = ExpertDriver(env.sim)
        act = lambda _obs: expert.act()  # noqa: E731
    ego_row = int(cfg.bev_size * cfg.ego_row_share)
    painter = BevRenderer(env.sim, BevConfig(size=cfg.bev_size, pixels_per_meter=cfg.pixels_per_meter,
                                             ego_from_bottom=ego_row))
    ppm = cfg.pixels_per_meter
    ego_px = (max(2, int(sim.vehicle_length * ppm)), max(1, int(sim.vehicle_width * ppm)))
    pictures, info = [], {}
    for _ in range(cfg.steps):
        pictures.append(bev_to_rgb(painter.render(np.array([0]))[0], ego_row, ego_px))
        obs, _, term, trunc, info = env.step(act(obs))
        if term[0] or trunc[0]:
            break
    rc = float(info["route_completion"][0]) if info else 0.0
    why = ended_by(info, env.metadata["infractions"]) if info else "step_limit"
    return EpisodeView(pictures, rc, why, int(round(1000 * sim.dt)))


def save_episode(ep: EpisodeView, out: str, frames: bool = True, gif: bool = True, scale: int = 3) -> None:
    """Write the pictures as PNG frames and/or ``episode.gif`` in ``out``."""
    from PIL import Image

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise DriveStageError(f"cannot create the output folder {out!r} ({err.strerror}).") from err
    pics = [Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) for p in ep.pictures]
    if frames:
        for k, pic in enumerate(pics):
            pic.save(os.path.join(out, f"frame_{k:04d}.png"))
    if gif and pics:
        pics[0].save(os.path.join(out, "episode.gif"), save_all=True, append_images=pics[1:], duration=ep.frame_ms,
                     loop=0)


@dataclass(frozen=True)
class HeldOut:
    """Where drivers are evaluated: routes in towns generated from a seed never used in training."""

    routes: int = 100
    """Held-out routes, each driven once."""
    towns: int = 4
    """Generated towns the routes are spread over."""
    world_seed: int = 1_000_003
    """Seed of the held-out towns and routes."""
    seed: int = 0
    """Seed of traffic and light phases."""
    town_size: int | None = None
    """Junctions per side of the held-out towns (default: as in training)."""
    traffic: int | None = None
    """Traffic vehicles around each route (default: as in training)."""
    map: str = ""
    """A map file (``.net.xml`` or ``.xodr``) to draw the held-out routes on instead of generated towns."""
    backend: str = "embedded"
    """``embedded`` (our simulator) or ``carla`` (a CARLA server: its own map, physics, traffic and lights)."""
    host: str = "localhost"
    """CARLA server host (``--backend carla``)."""
    port: int = 2000
    """CARLA server RPC port."""
    junction_margin: float | None = None
    """Every held-out junction reaches this far (m) beyond its widest road (default: as in training,
    drawn per junction); 1 gives compact junctions like SUMO's, 5 wide ones."""


BACKENDS = ("embedded", "carla")
"""Where ``steer drive eval`` drives."""


def evaluate_drivers(ppo: PPOConfig, held: HeldOut, model=None, expert: bool = True, client=None) -> tuple[str, dict]:
    """Drive the held-out routes with ``model`` (column ``policy``) and/or the scripted expert (column
    ``expert``); returns the text table and the summaries by column. On ``held.backend == "carla"`` the
    routes are drawn on the server's map and driven one at a time there (``client`` replaces
    ``carla.Client(host, port)``, e.g. in tests)."""
    from steer.driving.evaluation import evaluate_routes, heldout_env_config
    from steer.driving.expert import ExpertDriver
    from steer.driving.score import format_table, route_summary

    if held.routes <= 0 or held.towns <= 0:
        raise DriveStageError("routes and towns must be positive.")
    if held.backend not in BACKENDS:
        raise DriveStageError(f"--backend must be one of {', '.join(BACKENDS)}, not {held.backend!r}.")
    if held.town_size is not None and held.town_size < 2 or held.traffic is not None and held.traffic < 0:
        raise DriveStageError("town-size must be at least 2 and traffic must not be negative.")
    if held.junction_margin is not None and held.junction_margin < 0:
        raise DriveStageError(f"junction-margin must not be negative, not {held.junction_margin}.")
    if held.junction_margin is not None and (held.map or held.backend != "embedded"):
        raise DriveStageError("junction-margin sizes the generated towns' junctions; a map file or a server has its own.")
    if model is not None and held.world_seed == ppo.env.sim.seed:
        raise DriveStageError(f"world-seed {held.world_seed} is the training world; choose another for held-out routes.")
    check_map(held.map)
    env_cfg = heldout_env_config(ppo.env, n_routes=held.routes, seed=held.world_seed, n_towns=held.towns,
                                 town_size=held.town_size, n_npcs=held.traffic, map_path=held.map or None,
                                 junction_margin=held.junction_margin)
    results = {}
    sim, make_env, batch = None, None, 100
    if held.backend == "carla":
        from steer.driving.carla_backend import CarlaConfig, CarlaSim, CarlaUnavailableError
        from steer.driving.env import DriveVectorEnv

        try:
            sim = CarlaSim(dataclasses.replace(env_cfg.sim, map_path=""), CarlaConfig(host=held.host, port=held.port),
                           n_routes=held.routes, client=client)
        except CarlaUnavailableError as err:
            raise DriveStageError(str(err)) from err
        batch = 1

        def make_env_for(cfg):
            return lambda n: DriveVectorEnv(1, cfg, autoreset=False, sim=sim)
    try:
        if model is not None:
            import torch

            torch.set_num_threads(max(1, ppo.torch_threads))
            make_env = make_env_for(env_cfg) if sim is not None else None
            results["policy"] = route_summary(evaluate_routes(policy_actor(model), env_cfg, held.routes, seed=held.seed,
                                                              batch=batch, make_env=make_env))
        if expert:
            def expert_for(env):  # the expert reads the simulator state of the env it drives
                driver = ExpertDriver(env.sim)
                return lambda obs: driver.act()

            expert_cfg = dataclasses.replace(env_cfg, obs="none")  # the expert needs no observation
            make_env = make_env_for(expert_cfg) if sim is not None else None
            results[EXPERT] = route_summary(evaluate_routes(None, expert_cfg, held.routes, seed=held.seed,
                                                            bind=expert_for, batch=batch, make_env=make_env))
    finally:
        if sim is not None:
            sim.close()
    return format_table(results), results


@dataclass(frozen=True)
class DriveTrainConfig:
    """Options of ``steer drive train``."""

    name: str = "carl"
    """Run name: the run directory is ``<runs>/<name>``."""
    runs: Path = Path("runs")
    """Folder of the run directories."""
    resume: bool = False
    """Continue the run from its last checkpoint."""
    max_minutes: float = 30.0
    """Stop (with a checkpoint) after the first update past this many minutes; 0 trains to
    ``ppo.total_timesteps``."""
    eval_routes: int = 100
    """Held-out routes (in towns never trained on) driven with mean actions at the end; 0 skips."""
    curve_every_minutes: float = 3.0
    """Keep a copy of the policy this often; after training each copy drives the held-out routes, which
    gives the learning curve of ``report.png`` (0: only the final policy)."""
    keep_best: bool = True
    """Keep (export and evaluate) the policy copy with the highest route completion on
    ``validation_routes`` routes of a validation world, neither the training world nor a held-out one
    (checkpoint ``kept``; a later copy wins a tie), as ``steer dsrl`` keeps its best actor; off: the
    last policy. PPO after the warm start moves the held-out figure by ±0.05 between copies kept 3
    minutes apart."""
    validation_world_seed: int = 3_000_017
    """Seed of the validation world's towns and routes (``keep_best``)."""
    validation_routes: int = 100
    """Routes of the validation world each copy drives (``keep_best``; 0 keeps the last policy)."""
    processes: int = 2
    """Training processes on this machine (DistributedDataParallel over gloo; each steps its share of the
    envs, so the simulator and the updates use that many cores). Ignored under ``torchrun``."""
    progress: bool = True
    """Show a progress bar."""
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    """PPO, network and driving-env settings."""
    map: str = ""
    """Train (and evaluate held-out routes) on a map file, a SUMO ``.net.xml`` or an OpenDRIVE ``.xodr``,
    instead of generated towns (sets ``ppo.env.sim.map_path``)."""

    def resolved(self) -> "DriveTrainConfig":
        """The config with ``--map`` moved into the simulator settings."""
        if not self.map:
            return self
        sim = dataclasses.replace(self.ppo.env.sim, map_path=self.map)
        return dataclasses.replace(self, map="", ppo=dataclasses.replace(
            self.ppo, env=dataclasses.replace(self.ppo.env, sim=sim)))


class _RankLog:
    """The run-log of ranks other than 0: they share the checkpoint folder and write no metrics."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass


def _check_train(cfg: DriveTrainConfig, world: int = 1) -> None:
    """One-sentence errors for options that cannot work, before any process or run directory is made."""
    from steer.agent.ppo import check_config
    from steer.driving.env import check_env_config
    from steer.driving.simulator import INFRACTIONS

    check_map(cfg.map or cfg.ppo.env.sim.map_path)
    check_env_config(cfg.ppo.env)  # its DriveConfigError is user-facing: the CLI prints its one sentence
    if cfg.eval_routes < 0 or cfg.max_minutes < 0 or cfg.curve_every_minutes < 0 or cfg.processes < 1:
        raise DriveStageError("eval-routes, max-minutes and curve-every-minutes must not be negative, and "
                              "processes must be at least 1.")
    if cfg.keep_best and cfg.validation_routes and cfg.validation_world_seed in (
            cfg.ppo.env.sim.seed, HeldOut.world_seed):
        raise DriveStageError(f"validation-world-seed {cfg.validation_world_seed} is the training or the held-out "
                              "world; choose another.")
    check_config(cfg.ppo, world, INFRACTIONS)
    path = cfg.runs / cfg.name
    if cfg.resume and not (path / "checkpoints" / "last.safetensors").exists():
        raise DriveStageError(f"cannot resume {path}: it has no checkpoint yet; start it without --resume.")


@dataclass
class DriveTrainResult:
    """What :func:`train_driving` did (rank 0)."""

    path: Path
    global_step: int
    sps: float
    summary: dict
    """What ``summary.json`` holds."""
    table: str = ""
    """Held-out evaluation table of the final policy ("" when skipped)."""


def train_driving(cfg: DriveTrainConfig) -> DriveTrainResult | None:
    """Train, then drive the kept policy copies on held-out routes (learning curve, ``report.png``) and
    evaluate the final policy; returns None on ranks other than 0."""
    import copy

    from steer.agent.ppo import check_config, setup_distributed, train_ppo
    from steer.driving.simulator import INFRACTIONS
    from steer.ops.report import drive_report
    from steer.ops.run import Run

    cfg = cfg.resolved()
    _check_train(cfg)
    rank, world = setup_distributed()
    check_config(cfg.ppo, world, INFRACTIONS)
    path = cfg.runs / cfg.name
    run = Run(path, cfg, kind="ppo", resume=cfg.resume) if rank == 0 else _RankLog(path / "checkpoints")
    copies: list[tuple[int, float, dict]] = []
    select = cfg.keep_best and cfg.validation_routes > 0

    def keep(step: int, seconds: float, model) -> None:
        if (cfg.eval_routes or select) and cfg.curve_every_minutes > 0 and (
                not copies or seconds - copies[-1][1] >= 60.0 * cfg.curve_every_minutes):
            copies.append((step, seconds, copy.deepcopy(model.state_dict())))

    try:
        res = train_ppo(cfg.ppo, run, resume=cfg.resume, progress=cfg.progress and rank == 0,
                        time_limit_s=cfg.max_minutes * 60.0 if cfg.max_minutes > 0 else None, on_update=keep)
    except BaseException:
        if rank == 0:
            run.close("failed")
        raise
    if rank != 0:
        return None
    summary = {"global_step": res.global_step, "updates": res.updates, "sps": res.sps,
               # Env steps per CPU-second over all processes (rank 0's CPU time stands for each rank's).
               "sps_per_cpu": res.sps * res.seconds / max(res.cpu_seconds * world, 1e-9),
               "minutes": res.seconds / 60.0, "world_size": world, "train_episodes": res.episodes}
    table = ""
    if not copies or copies[-1][0] != res.global_step:
        copies.append((res.global_step, res.seconds, res.model.state_dict()))
    model = copy.deepcopy(res.model).cpu().eval()
    where = cfg.ppo.env.sim.map_path

    def drive_copies(held: HeldOut, group: str) -> list[tuple[str, dict]]:
        """(table, summary) of each kept copy on ``held``'s routes, logged as ``group/...`` at its step."""
        out = []
        for step, seconds, state in copies:
            model.load_state_dict(state)
            table, result = evaluate_drivers(cfg.ppo, held, model, expert=False)
            s = result["policy"]
            run.log(step, {f"{group}/route_completion": s["route_completion"],
                           f"{group}/driving_score": s["driving_score"], f"{group}/minutes": seconds / 60.0})
            out.append((table, s))
        return out

    kept = len(copies) - 1
    if select and len(copies) > 1:
        # The copy with the best validation route completion (driving score breaks a tie; a later copy a
        # full tie): a world of its own, so the held-out figures below stay those of unseen towns.
        val = [s for _, s in drive_copies(HeldOut(routes=cfg.validation_routes, world_seed=cfg.validation_world_seed,
                                                  map=where), "validation")]
        kept = max(range(len(copies)), key=lambda i: (val[i]["route_completion"], val[i]["driving_score"], i))
        summary["validation"] = [{"step": st, "minutes": sec / 60.0, "route_completion": v["route_completion"],
                                  "driving_score": v["driving_score"]} for (st, sec, _), v in zip(copies, val)]
    summary["kept"] = {"policy": "final" if kept == len(copies) - 1 else "best", "step": copies[kept][0],
                       "minutes": copies[kept][1] / 60.0}
    from steer.agent.ppo import CHECKPOINT, KEPT

    kept_file = Path(run.checkpoint_dir) / f"{KEPT}.safetensors"
    if kept != len(copies) - 1:
        from steer.agent.checkpoint import load_checkpoint, save_checkpoint

        _, meta = load_checkpoint(Path(run.checkpoint_dir), CHECKPOINT)
        save_checkpoint(Path(run.checkpoint_dir), KEPT, {"model": copies[kept][2]},
                        {**meta, "kept_step": copies[kept][0]})
    elif kept_file.exists():  # a resumed run whose last policy is now the one kept
        kept_file.unlink()
    if cfg.eval_routes:
        table, summary["eval"] = drive_copies(HeldOut(routes=cfg.eval_routes, map=where), "eval")[kept]
        summary["curve"] = [{"step": st, "minutes": sec / 60.0} for st, sec, _ in copies]
        drive_report(path, path / "report.png", title=f"PPO driving ({cfg.ppo.env.obs} observation)")
    run.finish(summary)
    return DriveTrainResult(path, res.global_step, res.sps, summary, table)


def _rank_main(rank: int, world: int, port: int, cfg: DriveTrainConfig, result_file: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    try:
        out = train_driving(cfg)
        if rank == 0:
            import pickle

            with open(result_file, "wb") as f:
                pickle.dump(out, f)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_driving_local(cfg: DriveTrainConfig) -> DriveTrainResult | None:
    """:func:`train_driving` in ``cfg.processes`` processes on this machine (one when already under
    ``torchrun`` or when ``processes`` is 1); returns rank 0's result."""
    cfg = cfg.resolved()
    if cfg.processes == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return train_driving(cfg)
    import pickle
    import socket
    import tempfile

    import torch.multiprocessing as mp

    _check_train(cfg, cfg.processes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result.pkl")
        mp.start_processes(_rank_main, args=(cfg.processes, port, cfg, result_file), nprocs=cfg.processes,
                           join=True, start_method="spawn")
        with open(result_file, "rb") as f:
            return pickle.load(f)
