"""``steer collect``, ``steer bc``, ``steer dsrl`` and ``steer eval``: thin layers over agent/ and sim/."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import torch
import tyro

from steer.agent.bc import BCConfig
from steer.agent.dsrl import DSRLConfig
from steer.ops.run import Run, RunError

DEFAULT_TASK = "steer/PlanarPush-v0"


@dataclass(frozen=True)
class CollectConfig:
    """Record scripted-expert demonstrations of a task as a Minari dataset."""

    out: Path = Path("runs/data/push")
    """Folder that will hold the dataset."""
    episodes: int = 200
    """Number of demonstrations."""
    seed: int = 1000
    """Episode i is reset with seed + i; the expert's own randomness is seeded with it too."""
    mirrored_fraction: float = 0.5
    """Share of demonstrations from the imperfect operator (PlanarPush: mirrored y axis; Lift, Can: grasp offset)."""
    task: str = DEFAULT_TASK
    """Task to demonstrate (steer/PlanarPush-v0, steer/Lift-v0 or steer/Can-v0)."""


def collect(cfg: CollectConfig) -> int:
    """Record scripted-expert demonstrations as a Minari dataset."""
    import steer.sim  # noqa: F401  (registers the task)
    from steer.sim.demos import collect_demos
    from steer.sim.expert import EXPERT_TASKS, make_expert

    if cfg.task not in EXPERT_TASKS:
        raise RunError(f"--task {cfg.task} has no scripted expert; choose one of {', '.join(EXPERT_TASKS)}.")
    if cfg.episodes < 1:
        raise RunError(f"--episodes must be at least 1, got {cfg.episodes}.")
    if not 0.0 <= cfg.mirrored_fraction <= 1.0:
        raise RunError(f"--mirrored-fraction must be in [0, 1], got {cfg.mirrored_fraction}.")
    expert = make_expert(cfg.task, cfg.seed, cfg.mirrored_fraction)
    demos = collect_demos(cfg.task, expert, cfg.episodes, cfg.seed, cfg.out)
    print(f"wrote {cfg.episodes} demonstrations ({demos.num_steps} steps, "
          f"{demos.successes.mean():.0%} successful) to {cfg.out}")
    return 0


def _task_meta(env_id: str) -> dict:
    import gymnasium as gym

    env = gym.make(env_id)
    u = env.unwrapped
    meta = {"task": env_id, "obs_names": list(getattr(u, "obs_names", [])),
            "action_names": list(getattr(u, "action_names", [])),
            "control_rate_hz": float(getattr(u, "control_rate_hz", 0.0)),
            "action_low": env.action_space.low.tolist(), "action_high": env.action_space.high.tolist()}
    env.close()
    return meta


@dataclass(frozen=True)
class BCCommand:
    """Train a BC diffusion policy on a demonstration dataset."""

    data: Path = Path("runs/data/push")
    """Dataset folder written by `steer collect`."""
    name: str = "bc"
    """Run name: the run lives in <runs>/<name>."""
    runs: Path = Path("runs")
    """Folder of all runs."""
    resume: bool = False
    """Continue the run from its last checkpoint."""
    eval_episodes: int = 100
    """Episodes of the final evaluation on held-out seeds (0 to skip)."""
    bc: BCConfig = BCConfig()
    """Training hyperparameters."""


def run_bc(cfg: BCCommand, progress: bool = True) -> dict:
    """Train BC into a run directory and evaluate it; returns the summary."""
    import steer.sim  # noqa: F401
    from steer.agent.bc import train_bc
    from steer.agent.dsrl import base_policy_fn
    from steer.agent.evaluate import evaluate_chunked
    from steer.sim.demos import load_demos

    demos = load_demos(cfg.data)
    torch.set_num_threads(1)
    t0 = time.time()
    with Run(cfg.runs / cfg.name, cfg, kind="bc", resume=cfg.resume) as run:
        meta = {**_task_meta(demos.env_id or DEFAULT_TASK), "source_run": str(run.path)}
        policy = train_bc(demos.observations, demos.actions, cfg.bc, run, meta, resume=cfg.resume, progress=progress)
        summary = {"task": meta["task"], "seed": cfg.bc.seed, "demos": len(demos.actions),
                   "demo_success_rate": float(demos.successes.mean()), "train_s": time.time() - t0}
        if cfg.eval_episodes > 0:
            res = evaluate_chunked(meta["task"], base_policy_fn(policy, cfg.bc.seed), cfg.eval_episodes,
                                   progress=progress, desc="eval bc")
            summary["eval"] = res.as_dict()
            run.log(cfg.bc.steps, {"eval/success_rate": res.success_rate, "eval/return_mean": res.return_mean})
        run.finish(summary)
    return summary


def bc(cfg: BCCommand) -> int:
    """Train a BC diffusion policy on a demonstration dataset."""
    summary = run_bc(cfg)
    if "eval" in summary:
        print(f"BC success rate {summary['eval']['success_rate']:.2f} over {summary['eval']['episodes']} "
              f"held-out episodes; run in {cfg.runs / cfg.name}")
    return 0


@dataclass(frozen=True)
class DSRLCommand:
    """Adapt a BC diffusion policy with RL over its latent noise (DSRL); its weights stay frozen."""

    policy: Path = Path("runs/bc")
    """BC run directory whose policy is steered."""
    name: str = "dsrl"
    """Run name: the run lives in <runs>/<name>."""
    runs: Path = Path("runs")
    """Folder of all runs."""
    resume: bool = False
    """Continue the run from its last checkpoint."""
    eval_episodes: int = 100
    """Episodes of the final evaluation on held-out seeds (0 to skip)."""
    shield: bool = False
    """Send every training action through the robot's safety shield, so training sees the limits the hardware
    enforces; interventions per 1,000 steps are logged when the conservative gate runs (``--dsrl.conservative.variant``)."""
    safe_set: bool = False
    """Check every chunk the learner proposes against the robot's safe set (the shield's position box less
    ``safe_margin``, positions predicted from the commands); a chunk that would leave it runs the baseline's
    chunk (w ~ N(0, I)) instead, and the learner stores the latent that ran."""
    safe_margin: float = 0.02
    """Metres (or radians) the safe set keeps from the shield's position bounds."""
    robot: bool = False
    """Treat the run's episodes as robot episodes: the shield, the safe-set fallback and the conservative gate
    (EpsMix, unless ``--dsrl.conservative.variant`` names another; ``monitor`` measures without gating) are on."""
    robot_config: Path | None = None
    """Limits YAML of the shield (default: the packaged PlanarPush robot config)."""
    preset: bool = True
    """Fill the DSRL settings left at their defaults from the BC run's task preset (agent/presets.py)."""
    dsrl: DSRLConfig = DSRLConfig()
    """DSRL hyperparameters."""

    def resolved(self) -> "DSRLCommand":
        """The command with ``robot`` expanded into the settings it implies (what the run's config records)."""
        if not self.robot:
            return self
        gate = self.dsrl.conservative
        if gate.variant == "off":
            gate = replace(gate, variant="epsmix")
        return replace(self, shield=True, safe_set=True, dsrl=replace(self.dsrl, conservative=gate))


def _load_bc(path: Path):
    from steer.agent.bc import load_policy
    from steer.agent.checkpoint import load_checkpoint

    ckpt = Path(path) / "checkpoints"
    if not (ckpt / "policy.safetensors").exists():
        raise RunError(f"{path} has no BC policy (expected {ckpt / 'policy.safetensors'}); train one with `steer bc`.")
    policy = load_policy(ckpt)
    _, meta = load_checkpoint(ckpt, "policy")
    return policy, meta


def shielded_env_wrapper(robot_config: Path | None = None):
    """A wrapper factory that puts the robot's safety shield between a task env and its actions."""
    import gymnasium as gym
    import numpy as np

    from steer.robot.config import load_robot_config
    from steer.robot.shield import SafetyShield

    config = load_robot_config(robot_config)
    period_ns = int(round(config.control_period_s * 1e9))

    class ShieldedTaskEnv(gym.Wrapper):
        """Actions pass the shield as on hardware; cumulative ``safety/interventions`` (commands it changed) and
        ``safety/violations`` (steps that end with a commanded joint outside its position bounds) in every info."""

        def __init__(self, env: gym.Env):
            super().__init__(env)
            names = list(getattr(env.unwrapped, "obs_names", []))
            missing = [j for j in config.command_joint_names if f"{j}.pos" not in names]
            if missing:
                raise RunError(f"the task observes no position of {missing}; the shield's robot config does not "
                               "match the task, pass a matching --robot-config.")
            self._pos_idx = [names.index(f"{j}.pos") for j in config.command_joint_names]
            self.interventions, self.violations = 0, 0
            self._now_ns, self._obs = 0, None

        def _position(self):
            return np.asarray(self._obs, dtype=np.float64)[self._pos_idx]

        def reset(self, **kwargs):
            self._obs, info = self.env.reset(**kwargs)
            self.shield = SafetyShield(config)
            self.shield.arm(self._now_ns)
            self.shield.start(self._now_ns)
            return self._obs, info

        def step(self, action):
            self._now_ns += period_ns
            out = self.shield.filter(action, self._now_ns, self._now_ns, position=self._position())
            self.interventions += int(bool(out.reasons))
            self._obs, r, term, trunc, info = self.env.step(out.command.astype(np.float32))
            pos = self._position()
            self.violations += int(np.any(pos < self.shield.position_min) or np.any(pos > self.shield.position_max))
            info = {**info, "safety/interventions": self.interventions, "safety/violations": self.violations}
            return self._obs, r, term, trunc, info

    return ShieldedTaskEnv


def chunk_safe_set(obs_names: list[str], robot_config: Path | None = None, margin: float = 0.02):
    """The robot's safe set for action chunks of a task whose observation is named ``obs_names``."""
    from steer.robot.config import load_robot_config
    from steer.robot.shield import ChunkSafeSet

    config = load_robot_config(robot_config)
    names = list(obs_names)
    missing = [j for j in config.command_joint_names if f"{j}.pos" not in names]
    if missing:
        raise RunError(f"the task observes no position of {missing}; the safe set's robot config does not match "
                       "the task, pass a matching --robot-config.")
    try:
        return ChunkSafeSet(config, [names.index(f"{j}.pos") for j in config.command_joint_names], margin)
    except ValueError as err:
        raise RunError(f"--safe-margin: {err}") from err


def run_dsrl(cfg: DSRLCommand, progress: bool = True) -> dict:
    """Run DSRL into a run directory and evaluate the result; returns the summary."""
    import steer.sim  # noqa: F401
    from steer.agent.dsrl import train_dsrl
    from steer.agent.evaluate import evaluate_chunked

    cfg = cfg.resolved()
    policy, meta = _load_bc(cfg.policy)
    if cfg.preset:
        from steer.agent.presets import apply_dsrl_preset

        cfg = replace(cfg, dsrl=apply_dsrl_preset(cfg.dsrl, meta["task"]))
    torch.set_num_threads(1)
    # Shield and safe set are checked before the run directory exists: a bad setting leaves nothing behind.
    wrapper = shielded_env_wrapper(cfg.robot_config) if cfg.shield else None
    safe_set = None
    if cfg.safe_set:
        import gymnasium as gym

        names = meta.get("obs_names") or list(getattr(gym.make(meta["task"]).unwrapped, "obs_names", []))
        safe_set = chunk_safe_set(names, cfg.robot_config, cfg.safe_margin)
    t0 = time.time()
    with Run(cfg.runs / cfg.name, cfg, kind="dsrl", resume=cfg.resume) as run:
        pmeta = {k: meta[k] for k in ("task", "obs_names", "action_names", "control_rate_hz", "action_low",
                                      "action_high") if k in meta}
        pmeta["source_run"] = str(run.path)
        pmeta["base_run"] = str(cfg.policy)
        fn, details = train_dsrl(policy, meta["task"], cfg.dsrl, run, resume=cfg.resume, progress=progress,
                                 policy_meta=pmeta, env_wrapper=wrapper, safe_set=safe_set)
        prog = details["progress"]
        summary = {"task": meta["task"], "seed": cfg.dsrl.seed, "algorithm": f"dsrl-{cfg.dsrl.algorithm}",
                   "env_steps": prog.env_steps, "episodes": prog.episodes, "curve": prog.curve,
                   "train_s": time.time() - t0}
        if safe_set is not None:
            summary["safe_set"] = {"chunks": prog.chunks, "fallbacks": prog.fallbacks, "margin": cfg.safe_margin}
        gated = details.get("gate")
        if gated is not None:
            kinds = [r.kind for r in gated.records]
            summary["conservative"] = {"variant": cfg.dsrl.conservative.variant, "episodes": len(kinds),
                                       "explorer_episodes": kinds.count("explorer"),
                                       "baseline_episodes": kinds.count("baseline"), "rho_final": gated.gate.rho(),
                                       "baseline_bounds": list(gated.gate.baseline_bounds())}
        if cfg.eval_episodes > 0:
            res = evaluate_chunked(meta["task"], fn, cfg.eval_episodes, progress=progress, desc="eval dsrl")
            summary["eval"] = res.as_dict()
            run.log(prog.env_steps, {"eval/final_success_rate": res.success_rate})
        summary["report"] = str(_dsrl_plot(cfg, run.path, summary))
        run.finish(summary)
    return summary


def _dsrl_plot(cfg: DSRLCommand, run_path: Path, summary: dict) -> Path:
    """report.png of a DSRL run: its learning curve against the BC policy, and the safety panel."""
    from steer.ops.report import dsrl_report

    bc_success = None
    bc_summary = Path(cfg.policy) / "summary.json"
    if bc_summary.exists():
        bc_success = json.loads(bc_summary.read_text()).get("eval", {}).get("success_rate")
    ev = summary.get("eval", {})
    return dsrl_report(run_path, bc_success, Path(run_path) / "report.png", title=f"DSRL on {summary['task']}",
                       final_success=ev.get("success_rate"), final_episodes=ev.get("episodes", 0))


def dsrl(cfg: DSRLCommand) -> int:
    """Adapt a BC diffusion policy with RL over its latent noise (DSRL); its weights stay frozen."""
    summary = run_dsrl(cfg)
    if "eval" in summary:
        print(f"DSRL success rate {summary['eval']['success_rate']:.2f} over {summary['eval']['episodes']} "
              f"held-out episodes after {summary['env_steps']} env steps; run in {cfg.runs / cfg.name}")
    return 0


@dataclass(frozen=True)
class EvalCommand:
    """Evaluate a BC or DSRL run on held-out seeds."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (BC or DSRL)."""
    episodes: int = 100
    """Evaluation episodes."""
    seed: int = 1_000_000
    """Seed of the first episode; training never uses seeds this high."""
    noise_seed: int = 0
    """Seed of the BC policy's N(0, I) noise."""


def evaluate(cfg: EvalCommand) -> int:
    """Evaluate a BC or DSRL run on held-out seeds and print success and return."""
    import steer.sim  # noqa: F401
    from steer.agent.dsrl import LatentPolicyFn, base_policy_fn
    from steer.agent.evaluate import evaluate_chunked
    from steer.agent.latent_actor import load_dsrl_policy

    ckpt = cfg.run / "checkpoints"
    if (ckpt / "dsrl_policy.safetensors").exists():
        actor, base, meta = load_dsrl_policy(ckpt)
        fn, kind = LatentPolicyFn(base, actor), "dsrl"
    elif (ckpt / "policy.safetensors").exists():
        base, meta = _load_bc(cfg.run)
        fn, kind = base_policy_fn(base, cfg.noise_seed), "bc"
    else:
        raise RunError(f"{cfg.run} holds no BC or DSRL policy; pass a run directory made by `steer bc` or `steer dsrl`.")
    torch.set_num_threads(1)
    res = evaluate_chunked(meta["task"], fn, cfg.episodes, seed=cfg.seed, progress=True, desc=f"eval {kind}")
    print(json.dumps({"run": str(cfg.run), "kind": kind, **res.as_dict()}))
    return 0


__all__ = ["collect", "bc", "dsrl", "evaluate", "run_bc", "run_dsrl"]
