"""The stages of the DSRL path as plain code: collect, BC, DSRL, evaluate, export, robot loop.

Each stage takes a frozen config and returns a typed result (a frozen dataclass); the
``steer`` commands (``train_cmd``, ``export_cmd``, ``demo``) only parse options, call a
stage and print. A stage that trains writes a run directory (:class:`steer.ops.run.Run`)
whose ``summary.json`` is its result's :meth:`summary`, and a finished stage's result is
read back from it with ``from_summary`` (``steer demo --resume``).

The robot's safety layers for training also live here: :class:`ShieldedTaskEnv` puts the
robot's shield between a task and its actions, :func:`chunk_safe_set` builds the safe set
that DSRL checks each chunk against.

About 500 lines because every stage of the path is here, so that a reader finds the whole
path in one file and ``demo`` composes it from one place; each stage is a short function.
"""

from __future__ import annotations


import functools
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from steer.agent.bc import BCConfig
from steer.agent.dsrl import DSRLConfig
from steer.agent.evaluate import EVAL_SEED_BASE, EvalResult
from steer.agent.runlog import policy_checkpoint, policy_kind, to_jsonable
from steer.ops.run import Run, RunError, read_summary

DEFAULT_TASK = "steer/PlanarPush-v0"


@dataclass(frozen=True)
class EvalSummary:
    """An evaluation on held-out seeds, as summaries record it."""

    success_rate: float
    return_mean: float
    episodes: int
    length_mean: float

    @classmethod
    def of(cls, res: EvalResult) -> "EvalSummary":
        return cls(**res.as_dict())


def _summary(result: Any) -> dict[str, Any]:
    """A result as its summary.json: every field but the run path, optional parts only when present."""
    return {k: v for k, v in to_jsonable(result).items() if k != "run" and v is not None}


# -- collect -------------------------------------------------------------------------

@dataclass(frozen=True)
class CollectConfig:
    """Record scripted-expert demonstrations of a task as a Minari dataset."""

    out: Path = Path("runs/data/push")
    """Folder that will hold the dataset."""
    episodes: int = field(default=200, metadata={"range": "[1, inf)"})
    """Number of demonstrations."""
    seed: int = 1000
    """Episode i is reset with seed + i; the expert's own randomness is seeded with it too."""
    mirrored_fraction: float = field(default=0.5, metadata={"range": "[0, 1]"})
    """Share of demonstrations from the imperfect operator (PlanarPush: mirrored y axis; Lift, Can: grasp offset)."""
    task: str = DEFAULT_TASK
    """Task to demonstrate (steer/PlanarPush-v0, steer/Lift-v0 or steer/Can-v0)."""
    overwrite: bool = False
    """Replace the dataset already in ``out`` (without it, a folder that holds files is refused)."""


@dataclass(frozen=True)
class CollectResult:
    """What :func:`collect_demos` wrote."""

    out: Path
    episodes: int
    steps: int
    success_rate: float


def collect_demos(cfg: CollectConfig) -> CollectResult:
    """Record scripted-expert demonstrations as a Minari dataset in ``cfg.out``."""
    import steer.sim  # noqa: F401  (registers the task)
    from steer.sim.demos import collect_demos as collect
    from steer.sim.expert import EXPERT_TASKS, make_expert

    if cfg.task not in EXPERT_TASKS:
        raise RunError(f"--task {cfg.task} has no scripted expert; choose one of {', '.join(EXPERT_TASKS)}.")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder; choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:  # checked before minutes of rollouts
        raise RunError(f"{out} already holds files (a dataset?); pass --overwrite to replace its dataset or "
                       "choose another --out.")
    expert = make_expert(cfg.task, cfg.seed, cfg.mirrored_fraction)
    demos = collect(cfg.task, expert, cfg.episodes, cfg.seed, cfg.out)
    return CollectResult(cfg.out, cfg.episodes, int(demos.num_steps), float(demos.successes.mean()))


# -- BC ------------------------------------------------------------------------------

def task_meta(env_id: str) -> dict[str, Any]:
    """What a policy checkpoint records about its task: names, control rate, action bounds."""
    env = gym.make(env_id)
    u = env.unwrapped
    meta = {"task": env_id, "obs_names": list(getattr(u, "obs_names", [])),
            "action_names": list(getattr(u, "action_names", [])),
            "control_rate_hz": float(getattr(u, "control_rate_hz", 0.0)),
            "action_low": env.action_space.low.tolist(), "action_high": env.action_space.high.tolist()}
    env.close()
    return meta


@dataclass(frozen=True)
class BCRunConfig:
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


@dataclass(frozen=True)
class BCResult:
    """A finished BC run; :meth:`summary` is its summary.json."""

    run: Path
    task: str
    seed: int
    demos: int
    demo_success_rate: float
    train_s: float
    eval: EvalSummary | None = None

    def summary(self) -> dict[str, Any]:
        return _summary(self)

    @classmethod
    def from_summary(cls, run: Path, s: dict[str, Any]) -> "BCResult":
        return cls(run=Path(run), task=s["task"], seed=s["seed"], demos=s["demos"],
                   demo_success_rate=s["demo_success_rate"], train_s=s["train_s"],
                   eval=EvalSummary(**s["eval"]) if "eval" in s else None)


def run_bc(cfg: BCRunConfig, progress: bool = True) -> BCResult:
    """Train BC into the run directory ``cfg.runs / cfg.name`` and evaluate it."""
    import steer.sim  # noqa: F401
    from steer.agent.bc import base_policy_fn, train_bc
    from steer.agent.evaluate import evaluate_chunked
    from steer.sim.demos import load_demos

    demos = load_demos(cfg.data)
    torch.set_num_threads(1)
    t0 = time.time()
    with Run(cfg.runs / cfg.name, cfg, kind="bc", resume=cfg.resume) as run:
        meta = {**task_meta(demos.env_id or DEFAULT_TASK), "source_run": str(run.path)}
        policy = train_bc(demos.observations, demos.actions, cfg.bc, run, meta, resume=cfg.resume, progress=progress)
        ev = None
        if cfg.eval_episodes > 0:
            res = evaluate_chunked(meta["task"], base_policy_fn(policy, cfg.bc.seed), cfg.eval_episodes,
                                   progress=progress, desc="eval bc")
            ev = EvalSummary.of(res)
            run.log(cfg.bc.steps, {"eval/success_rate": res.success_rate, "eval/return_mean": res.return_mean})
        result = BCResult(run.path, meta["task"], cfg.bc.seed, len(demos.actions), float(demos.successes.mean()),
                          time.time() - t0, ev)
        run.finish(result.summary())
    return result


def load_bc_run(path: Path):
    """The frozen BC policy of a ``steer bc`` run and its checkpoint meta."""
    from steer.agent.bc import load_policy
    from steer.agent.checkpoint import load_checkpoint

    if not policy_checkpoint(path, "bc").exists():
        raise RunError(f"{path} has no BC policy (expected {policy_checkpoint(path, 'bc')}); "
                       "train one with `steer bc`.")
    ckpt = Path(path) / "checkpoints"
    policy = load_policy(ckpt)
    _, meta = load_checkpoint(ckpt, "policy")
    return policy, meta


# -- safety layers for training ------------------------------------------------------

def _position_indices(obs_names: list[str], config, what: str) -> list[int]:
    names = list(obs_names)
    missing = [j for j in config.command_joint_names if f"{j}.pos" not in names]
    if missing:
        raise RunError(f"the task observes no position of {missing}; the {what}'s robot config does not match "
                       "the task, pass a matching --robot-config.")
    return [names.index(f"{j}.pos") for j in config.command_joint_names]


class ShieldedTaskEnv(gym.Wrapper):
    """Actions pass the robot's safety shield as on hardware.

    Every info carries the cumulative ``safety/interventions`` (commands the shield changed) and
    ``safety/violations`` (steps that end with a commanded joint outside its position bounds).
    """

    def __init__(self, env: gym.Env, config):
        super().__init__(env)
        self.config = config
        self._pos_idx = _position_indices(list(getattr(env.unwrapped, "obs_names", [])), config, "shield")
        self._period_ns = int(round(config.control_period_s * 1e9))
        self.interventions, self.violations = 0, 0
        self._now_ns, self._obs = 0, None

    def _position(self) -> np.ndarray:
        return np.asarray(self._obs, dtype=np.float64)[self._pos_idx]

    def reset(self, **kwargs):
        from steer.robot.shield import SafetyShield

        self._obs, info = self.env.reset(**kwargs)
        self.shield = SafetyShield(self.config)
        self.shield.arm(self._now_ns)
        self.shield.start(self._now_ns)
        return self._obs, info

    def step(self, action):
        self._now_ns += self._period_ns
        out = self.shield.filter(action, self._now_ns, self._now_ns, position=self._position())
        self.interventions += int(bool(out.reasons))
        self._obs, r, term, trunc, info = self.env.step(out.command.astype(np.float32))
        pos = self._position()
        self.violations += int(np.any(pos < self.shield.position_min) or np.any(pos > self.shield.position_max))
        info = {**info, "safety/interventions": self.interventions, "safety/violations": self.violations}
        return self._obs, r, term, trunc, info


def shielded_env_wrapper(robot_config: Path | None = None) -> Callable[[gym.Env], ShieldedTaskEnv]:
    """A wrapper factory (env → :class:`ShieldedTaskEnv`) with the robot config loaded once."""
    from steer.robot.config import load_robot_config

    return functools.partial(ShieldedTaskEnv, config=load_robot_config(robot_config))


def chunk_safe_set(obs_names: list[str], robot_config: Path | None = None, margin: float = 0.02):
    """The robot's safe set for action chunks of a task whose observation is named ``obs_names``."""
    from steer.robot.config import load_robot_config
    from steer.robot.shield import ChunkSafeSet

    config = load_robot_config(robot_config)
    try:
        return ChunkSafeSet(config, _position_indices(obs_names, config, "safe set"), margin)
    except ValueError as err:
        raise RunError(f"--safe-margin: {err}") from err


# -- DSRL ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DSRLRunConfig:
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
    preset_keep: tuple[str, ...] = ()
    """DSRL fields the preset leaves alone even at their defaults (e.g. ``algorithm`` to run DSRL-SAC on Lift)."""
    dsrl: DSRLConfig = DSRLConfig()
    """DSRL hyperparameters."""

    def resolved(self) -> "DSRLRunConfig":
        """The config with ``robot`` expanded into the settings it implies (what the run's config records)."""
        if not self.robot:
            return self
        gate = self.dsrl.conservative
        if gate.variant == "off":
            gate = replace(gate, variant="epsmix")
        return replace(self, shield=True, safe_set=True, dsrl=replace(self.dsrl, conservative=gate))


@dataclass(frozen=True)
class SafeSetSummary:
    """How often the safe set replaced the learner's chunk."""

    chunks: int
    fallbacks: int
    margin: float


@dataclass(frozen=True)
class GateSummary:
    """What the conservative gate did over the run."""

    variant: str
    episodes: int
    explorer_episodes: int
    baseline_episodes: int
    rho_final: float
    baseline_bounds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DSRLResult:
    """A finished DSRL run; :meth:`summary` is its summary.json."""

    run: Path
    task: str
    seed: int
    algorithm: str
    env_steps: int
    episodes: int
    curve: list
    train_s: float
    report: str = ""
    eval: EvalSummary | None = None
    safe_set: SafeSetSummary | None = None
    conservative: GateSummary | None = None
    selection: dict | None = None
    """Which actor the run kept (``selected``: ``best`` or ``final``; its env steps and curve success)."""

    def summary(self) -> dict[str, Any]:
        return _summary(self)

    @classmethod
    def from_summary(cls, run: Path, s: dict[str, Any]) -> "DSRLResult":
        return cls(run=Path(run), task=s["task"], seed=s["seed"], algorithm=s["algorithm"], env_steps=s["env_steps"],
                   episodes=s["episodes"], curve=s["curve"], train_s=s["train_s"], report=s.get("report", ""),
                   eval=EvalSummary(**s["eval"]) if "eval" in s else None,
                   safe_set=SafeSetSummary(**s["safe_set"]) if "safe_set" in s else None,
                   conservative=GateSummary(**s["conservative"]) if "conservative" in s else None,
                   selection=s.get("selection"))


def run_dsrl(cfg: DSRLRunConfig, progress: bool = True) -> DSRLResult:
    """Run DSRL into the run directory ``cfg.runs / cfg.name``, evaluate the result and plot its report."""
    import steer.sim  # noqa: F401
    from steer.agent.dsrl import train_dsrl
    from steer.agent.evaluate import evaluate_chunked

    cfg = cfg.resolved()
    policy, meta = load_bc_run(cfg.policy)
    if cfg.preset:
        from steer.agent.presets import apply_dsrl_preset

        unknown = sorted(set(cfg.preset_keep) - {f.name for f in fields(cfg.dsrl)})
        if unknown:
            raise RunError(f"--preset-keep names {', '.join(unknown)}, which are not DSRL settings.")
        cfg = replace(cfg, dsrl=apply_dsrl_preset(cfg.dsrl, meta["task"], keep=cfg.preset_keep))
    torch.set_num_threads(1)
    # Shield and safe set are checked before the run directory exists: a bad setting leaves nothing behind.
    wrapper = shielded_env_wrapper(cfg.robot_config) if cfg.shield else None
    safe_set = None
    if cfg.safe_set:
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
        safe = SafeSetSummary(prog.chunks, prog.fallbacks, cfg.safe_margin) if safe_set is not None else None
        gate = None
        gated = details.get("gate")
        if gated is not None:
            kinds = [r.kind for r in gated.records]
            gate = GateSummary(cfg.dsrl.conservative.variant, len(kinds), kinds.count("explorer"),
                               kinds.count("baseline"), gated.gate.rho(), list(gated.gate.baseline_bounds()))
        ev = None
        if cfg.eval_episodes > 0:
            res = evaluate_chunked(meta["task"], fn, cfg.eval_episodes, progress=progress, desc="eval dsrl")
            ev = EvalSummary.of(res)
            run.log(prog.env_steps, {"eval/final_success_rate": res.success_rate})
        result = DSRLResult(run.path, meta["task"], cfg.dsrl.seed, f"dsrl-{cfg.dsrl.algorithm}", prog.env_steps,
                            prog.episodes, prog.curve, time.time() - t0, eval=ev, safe_set=safe, conservative=gate,
                            selection=details.get("selection"))
        result = replace(result, report=str(_dsrl_plot(cfg.policy, result)))
        run.finish(result.summary())
    return result


def _dsrl_plot(bc_run: Path, result: DSRLResult) -> Path:
    """report.png of a DSRL run: its learning curve against the BC policy, and the safety panel."""
    from steer.ops.report import dsrl_report

    bc = read_summary(bc_run) or {}
    ev = result.eval
    return dsrl_report(result.run, bc.get("eval", {}).get("success_rate"), result.run / "report.png",
                       title=f"DSRL on {result.task}", final_success=ev.success_rate if ev else None,
                       final_episodes=ev.episodes if ev else 0)


# -- evaluate, export, robot loop ----------------------------------------------------

@dataclass(frozen=True)
class RunEvaluation:
    """A BC or DSRL run evaluated on held-out seeds."""

    run: Path
    kind: str
    """``bc`` or ``dsrl``."""
    eval: EvalSummary


def evaluate_run(run: Path, episodes: int = 100, seed: int = EVAL_SEED_BASE, noise_seed: int = 0,
                 progress: bool = True) -> RunEvaluation:
    """Evaluate the policy of a BC or DSRL run on the held-out seeds ``seed, seed + 1, …``."""
    import steer.sim  # noqa: F401
    from steer.agent.bc import base_policy_fn
    from steer.agent.dsrl import LatentPolicyFn, load_dsrl_policy
    from steer.agent.evaluate import evaluate_chunked

    kind = policy_kind(run)
    if kind == "dsrl":
        actor, base, meta = load_dsrl_policy(Path(run) / "checkpoints")
        fn = LatentPolicyFn(base, actor)
    elif kind == "bc":
        base, meta = load_bc_run(run)
        fn = base_policy_fn(base, noise_seed)
    else:
        raise RunError(f"{run} holds no BC or DSRL policy; pass a run directory made by `steer bc` or `steer dsrl`.")
    torch.set_num_threads(1)
    res = evaluate_chunked(meta["task"], fn, episodes, seed=seed, progress=progress, desc=f"eval {kind}")
    return RunEvaluation(Path(run), kind, EvalSummary.of(res))


@dataclass(frozen=True)
class ExportedPolicy:
    """An ONNX file written from a run, with its spec and its distance from torch."""

    onnx: Path
    spec: Any
    """The :class:`steer.robot.spec.PolicySpec` written into the file."""
    max_abs_diff: float | None
    """Max |onnx − torch| on 1,000 observations; None when not checked."""


def export_policy(run: Path, onnx_path: Path, check: bool = True, tolerance: float = 1e-5) -> ExportedPolicy:
    """Export a BC, DSRL or PPO run's policy to one ONNX file; with ``check``, refuse (and delete) a file that
    differs from torch by more than ``tolerance``."""
    from steer.agent.export import ExportError, export_run, parity

    if not Path(run).is_dir():
        raise ExportError(f"{run} is not a run directory; pass one made by `steer bc`, `steer dsrl` or "
                          "`steer drive train`.")
    spec = export_run(run, onnx_path)
    diff = None
    if check:
        diff = parity(run, onnx_path)
        if diff > tolerance:
            Path(onnx_path).unlink(missing_ok=True)
            raise ExportError(f"the ONNX graph differs from torch by {diff:.2e} (> {tolerance:g}); nothing was written.")
    return ExportedPolicy(Path(onnx_path), spec, diff)


@dataclass(frozen=True)
class ExportCheck:
    """An exported ONNX file checked against torch and timed at batch 1 (the demo's ``export`` entry)."""

    onnx: str
    max_abs_diff: float
    latency_ms_p50: float


def export_checked(run: Path, onnx_path: Path, timing_calls: int = 300) -> ExportCheck:
    """:func:`export_policy` with the parity check, then the median latency of batch-1 inference."""
    import onnxruntime as ort

    exported = export_policy(run, onnx_path, check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    obs = np.zeros((1, sess.get_inputs()[0].shape[1]), np.float32)
    times = []
    for _ in range(timing_calls):
        t = time.perf_counter()
        sess.run(["action"], {"obs": obs})
        times.append(time.perf_counter() - t)
    return ExportCheck(str(onnx_path), float(exported.max_abs_diff), float(np.median(times) * 1e3))


def robot_loop(onnx_path: Path, episodes: int, bag_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Closed-loop episodes of an exported policy over DDS (simulated robot and policy node, two processes),
    compared with in-process runs on the same held-out seeds; the ``robot_loop`` entry of a summary."""
    from steer.robot.closed_loop import evaluate_in_process, run_closed_loop

    seed = EVAL_SEED_BASE + 900_000  # held out from training and from the evaluations of BC and DSRL
    loop = run_closed_loop(onnx_path, episodes=episodes, seed=seed, bag_dir=bag_dir, progress=progress)
    ref_rate, _, _ = evaluate_in_process(onnx_path, episodes=episodes, seed=seed)
    return {**loop.as_summary(), "latency_ms_p50": loop.latency_ms_p50, "missed_deadlines": loop.missed_deadlines,
            "in_process_success_rate": ref_rate, "seed": seed}


def finished(run: Path, result_type: type[BCResult] | type[DSRLResult]):
    """The result of a run that already finished (its summary.json), else None."""
    s = read_summary(run)
    return result_type.from_summary(run, s) if s is not None else None
