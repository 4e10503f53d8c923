"""What DSRL-SAC and DSRL-NA share: config, seeds, progress, the baseline's latents and the gated chunk step.

Neither algorithm module imports the other; both import this one. The BC baseline's noise
comes from :func:`steer.agent.bc.base_latents` (w ~ N(0, I) clipped to the policy's
``latent_noise_bound``, decided in :mod:`steer.robot.spec`): the warm-up, the gate's
baseline chunks and the safe-set fallback all draw through it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from steer.agent.bc import base_latents
from steer.agent.conservative import ConservativeConfig, GatedEnvs
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.latent_actor import LatentActor
from steer.agent.evaluate import EVAL_SEED_BASE, evaluate_chunked
from steer.agent.runlog import RunLog

# Training episodes use seeds from here up; evaluation curves use their own range.
TRAIN_SEED_BASE = 10_000
CURVE_SEED_BASE = EVAL_SEED_BASE + 500_000


class DSRLConfigError(ValueError):
    """DSRL settings that do not fit the policy they steer."""

    user_facing = True


@dataclass(frozen=True)
class DSRLConfig:
    """DSRL hyperparameters. Defaults are sized for 2 CPU cores; the paper's GPU settings are noted per field."""

    algorithm: Literal["sac", "na"] = "sac"
    """``sac`` (DSRL-SAC) or ``na`` (DSRL-NA, noise-aliased)."""
    latent_noise_bound: float = field(default=1.5, metadata={"range": "(0, inf)"})
    """b: the learner's latent noise is bounded to [-b, b] (paper: 1.0-2.5, default 1.5); at least the BC
    policy's own bound, so that the baseline's noise is an action the learner could take."""
    env_steps: int = field(default=24_000, metadata={"range": "[1, inf)"})
    """Budget of task env steps (each latent step executes one chunk)."""
    reward_offset: float = field(default=1.0, metadata={"range": "(-inf, inf)"})
    """Subtracted from every task reward (official Robomimic setting: 1, i.e. -1 per step until success)."""
    warmup_env_steps: int = 1_000
    """Env steps of base-policy rollouts (the BC baseline's noise) before learning starts."""
    utd: int = field(default=8, metadata={"range": "[1, inf)"})
    """Gradient updates per latent step (paper: 20 on a GPU; 4 here learned clearly slower)."""
    batch_size: int = field(default=256, metadata={"range": "[1, inf)"})
    """Minibatch size."""
    lr: float = field(default=3e-4, metadata={"range": "(0, inf)"})
    """Adam learning rate of actor, critics and entropy coefficient."""
    tau: float = field(default=0.005, metadata={"range": "(0, 1]"})
    """Polyak factor of the target critics."""
    gamma: float = field(default=0.99, metadata={"range": "[0, 1]"})
    """Discount per latent step."""
    hidden_dim: int = field(default=128, metadata={"range": "[1, inf)"})
    """Width of actor and critic MLPs (paper: 256 on Robomimic, 128 on Gym tasks)."""
    num_layers: int = field(default=3, metadata={"range": "[1, inf)"})
    """Hidden layers of actor and critic MLPs."""
    layer_norm: bool = True
    """Layer norm after every hidden linear layer."""
    target_entropy: float = field(default=0.0, metadata={"range": "(-inf, inf)"})
    """Target of automatic entropy tuning (official default 0)."""
    init_alpha: float = field(default=1.0, metadata={"range": "(0, inf)"})
    """Starting value of the tuned entropy coefficient α (SB3's and the official default: 1). The entropy
    bonus of a noise_dim-D squashed latent is worth up to α·noise_dim·log 2 nats per chunk, which at α = 1
    outweighs a chunk's task reward of about −chunk_len until α has been tuned down."""
    num_envs: int = field(default=4, metadata={"range": "[1, inf)"})
    """Task envs stepped together."""
    buffer_size: int = field(default=100_000, metadata={"range": "[1, inf)"})
    """Replay capacity in latent steps."""
    na_utd: int = field(default=4, metadata={"range": "[1, inf)"})
    """DSRL-NA: gradient updates per latent step (each decodes the diffusion policy, so they cost more than
    SAC's; UTD 4 with 4 distillation steps reached 0.94 in 10k env steps, UTD 1 with 1 never learned)."""
    na_distill_steps: int = 4
    """DSRL-NA: regression steps of Q_W onto Q_A per update (official: 10 on a GPU)."""
    na_prefill_demos: str = ""
    """DSRL-NA: a dataset folder whose demonstration chunks prefill the replay buffer ('' for none)."""
    max_minutes: float = field(default=0.0, metadata={"range": "[0, inf)"})
    """Wall-clock budget of this process's training, minutes (0: none): training stops at the first latent
    step past it, before ``env_steps``, saves a checkpoint (``--resume`` goes on from there) and the run
    is evaluated as usual; the run's summary records the env steps it reached."""
    eval_every: int = field(default=2_000, metadata={"range": "[1, inf)"})
    """Env steps between evaluations of the deterministic latent actor (learning curve)."""
    eval_episodes: int = 50
    """Episodes per learning-curve evaluation."""
    keep_best: bool = True
    """Return (and save) the actor of the best learning-curve evaluation rather than the last one. The
    final actor is evaluated on the curve's episodes too, and a later actor wins a tie. The curve's
    episodes are disjoint from the held-out ones, so a held-out evaluation of the chosen actor stays
    honest. Off: the last actor, as training left it."""
    checkpoint_every: int = field(default=2_000, metadata={"range": "[1, inf)"})
    """Env steps between resumable checkpoints."""
    seed: int = 0
    """Seed of networks, warm-up noise and training episodes."""
    conservative: ConservativeConfig = ConservativeConfig()
    """Conservative exploration gate (issue 6): episodes or chunks fall back to the BC baseline so that
    training episodes stay near or above its value; off by default."""

    def check_policy(self, policy: DiffusionPolicy) -> None:
        """Refuse (one sentence) a bound that would put the baseline's noise outside the learner's box."""
        base = policy.cfg.latent_noise_bound
        if self.latent_noise_bound < base:
            raise DSRLConfigError(
                f"DSRL's latent_noise_bound {self.latent_noise_bound:g} is below the BC policy's {base:g}, so the "
                f"baseline's noise would leave the learner's box; use --dsrl.latent-noise-bound {base:g} or more.")

    def warmup_latent_steps(self, chunk_len: int) -> int:
        """Latent steps of warm-up (one latent step executes about ``chunk_len`` env steps)."""
        return max(1, self.warmup_env_steps // chunk_len)

    def train_seed(self, episodes_done: int) -> int:
        """Seed of the first training episode after ``episodes_done`` episodes."""
        return TRAIN_SEED_BASE + self.seed * 100_000 + episodes_done

    def fallback_seed(self, env_index: int) -> int:
        """Seed of the safe-set fallback noise of training env ``env_index``."""
        return self.seed * 1_000 + env_index


class LatentPolicyFn:
    """Deterministic latent actor as a chunk policy: obs [B, obs_dim] → chunks [B, H, A].

    ``actor_mean`` maps normalized observations to latents (a :class:`LatentActor` is one)."""

    def __init__(self, policy: DiffusionPolicy, actor_mean: Callable[[torch.Tensor], torch.Tensor]):
        self.policy, self.actor_mean = policy, actor_mean

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)
            on = self.policy.obs_norm.normalize(o)
            w = self.actor_mean(on).reshape(o.shape[0], self.policy.cfg.chunk_len, self.policy.cfg.action_dim)
            return self.policy.sample(o, w).numpy()


EnvWrapper = Callable[[gym.Env], gym.Env]


def make_task_env(env_id: str, env_wrapper: EnvWrapper | None = None) -> gym.Env:
    """The task env, wrapped (e.g. by a safety shield) when a wrapper is given."""
    env = gym.make(env_id)
    return env_wrapper(env) if env_wrapper is not None else env


def episode_value(cfg: ConservativeConfig, task_return: float, info: dict) -> float:
    """What the gate scores an episode by: success (Clopper–Pearson) or the task return (Hoeffding)."""
    return float(bool(info.get("is_success", False))) if cfg.bound == "clopper_pearson" else task_return


class ChunkGate:
    """The conservative gate at chunk level, the same for both algorithms.

    :meth:`latents` decides what runs for every env's next chunk (the learner's latent, its mean, or
    the BC baseline's noise); :meth:`record` accounts the executed chunks and finished episodes.
    ``gated`` is the :class:`GatedEnvs` with the per-episode records.
    """

    def __init__(self, cfg: DSRLConfig, policy: DiffusionPolicy, saved: dict | None = None):
        self.cfg, self.policy = cfg, policy
        self.gated = GatedEnvs(cfg.conservative, cfg.num_envs)
        if saved is not None:
            self.gated.load_state(saved)
        self._task_return = np.zeros(cfg.num_envs)

    def latents(self, sampled: np.ndarray, mean: Callable[[], np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The latents [num_envs, noise_dim] to run: ``sampled`` (the learner's draw) where the explorer runs
        (``mean()``, its deterministic action, with ``explorer_deterministic``), the baseline's noise elsewhere."""
        explore = self.gated.explorer_mask()
        base = ~explore
        w = np.array(sampled, dtype=np.float32)
        ccfg = self.gated.cfg
        if ccfg.variant != "monitor" and ccfg.explorer_deterministic and explore.any():
            w[explore] = mean()[explore]
        if base.any():
            w[base] = base_latents(self.policy, rng, int(base.sum()))
        return w

    def record(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict], env_steps: int, warmup: bool,
               run: RunLog) -> None:
        """Account one vector step (``env_steps``: the count after it) and end the finished episodes."""
        for i, info in enumerate(infos):
            self.gated.on_chunk(i, info)
            # The gate scores the task's return: undo the learner's reward offset.
            self._task_return[i] += rewards[i] + self.cfg.reward_offset * info.get("chunk_steps", 0)
            if dones[i]:
                value = episode_value(self.gated.cfg, float(self._task_return[i]), info)
                self.gated.on_episode_end(i, value, env_steps, warmup, run)
                self._task_return[i] = 0.0

    def discard_episode(self, i: int) -> None:
        """Forget env ``i``'s episode in flight (its outcome is unknown, e.g. the robot's node died) and plan
        a fresh one; the gate's statistics do not change."""
        gate = self.gated.gate
        plan = self.gated.plans[i]
        if plan in gate.in_flight:
            gate.in_flight.remove(plan)
        gate.episodes_started -= 1  # the refresh cadence counts episodes that finished or run
        self.gated.plans[i] = gate.begin_episode(force_baseline=plan.kind == "baseline")
        self._task_return[i] = 0.0

    def plan_kind(self, i: int) -> str:
        """What env ``i``'s current episode runs: ``explorer``, ``baseline`` or ``mix``."""
        return self.gated.plans[i].kind

    def state(self) -> dict:
        """JSON-able state for checkpoints."""
        return self.gated.state()


def make_chunk_gate(cfg: DSRLConfig, policy: DiffusionPolicy, meta: dict) -> ChunkGate | None:
    """The gate of a run (restored from a checkpoint's ``meta``), or None when it is off."""
    if not cfg.conservative.enabled:
        return None
    return ChunkGate(cfg, policy, meta.get("conservative"))


class Progress:
    """Shared bookkeeping of both algorithms: env-step budget, episodes, evaluation, metrics."""

    def __init__(self, cfg: DSRLConfig, run: RunLog, policy: DiffusionPolicy, env_id: str, progress: bool,
                 meta: dict | None = None, tensors: dict | None = None):
        meta, tensors = meta or {}, tensors or {}
        self.cfg, self.run, self.policy, self.env_id = cfg, run, policy, env_id
        env_steps = int(meta.get("env_steps", 0))
        self.env_steps, self.episodes = env_steps, int(meta.get("episodes", 0))
        # Safe-set fallbacks among executed chunks.
        self.fallbacks, self.chunks = int(meta.get("fallbacks", 0)), int(meta.get("chunks", 0))
        self.curve: list[list[float]] = meta.get("curve") or []
        # The best curve point so far ([env_steps, success, return]) and its actor's weights (keep_best).
        self.best: list[float] | None = meta.get("best")
        self.best_actor: dict[str, torch.Tensor] | None = tensors.get("best_actor")
        self.recent_success: deque[float] = deque(maxlen=20)
        self.recent_return: deque[float] = deque(maxlen=20)
        self.next_eval = (env_steps // cfg.eval_every + 1) * cfg.eval_every if self.curve else 0
        self.next_ckpt = (env_steps // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        self.t0, self.steps0 = time.time(), env_steps
        self.bar = tqdm(total=cfg.env_steps, initial=env_steps, desc=f"dsrl-{cfg.algorithm}", unit="env-step",
                        disable=not progress)

    def on_transition(self, infos: list[dict], dones: np.ndarray, ep_returns: list[float | None]) -> None:
        n = int(sum(i.get("chunk_steps", 0) for i in infos))
        self.env_steps += n
        self.bar.update(n)
        self.chunks += len(infos)
        self.fallbacks += sum(bool(i.get("latent_fallback", False)) for i in infos)
        for info, done, ret in zip(infos, dones, ep_returns):
            if done:
                self.episodes += 1
                self.recent_success.append(float(info.get("is_success", False)))
                if ret is not None:
                    self.recent_return.append(ret)
        if any(dones) and self.recent_success:
            m = {"charts/success_rate": float(np.mean(self.recent_success)), "charts/episodes": self.episodes,
                 "charts/SPS": (self.env_steps - self.steps0) / max(time.time() - self.t0, 1e-9)}
            if self.recent_return:
                m["charts/episodic_return"] = float(np.mean(self.recent_return))
            if any("latent_fallback" in i for i in infos):
                m["safety/fallbacks"] = self.fallbacks
                m["safety/fallback_frac"] = self.fallbacks / max(self.chunks, 1)
            self.run.log(self.env_steps, m)
            self.bar.set_postfix(success=f"{m['charts/success_rate']:.2f}")

    def maybe_eval(self, actor: Callable[[], LatentActor]) -> None:
        """Evaluate the deterministic latent actor (``actor()`` builds it) on the curve's episodes when an
        ``eval_every`` boundary has passed."""
        if self.env_steps < self.next_eval:
            return
        self.curve.append(self._evaluate(actor()))
        # The next multiple of eval_every, skipping one that is under half an interval away (the first
        # evaluation lands wherever warm-up ended, and two of nearly the same actor would say nothing new).
        every = self.cfg.eval_every
        self.next_eval = (self.env_steps // every + 1) * every
        if self.next_eval - self.env_steps < every / 2:
            self.next_eval += every

    def _evaluate(self, actor: LatentActor) -> list[float]:
        """[env_steps, success, return] of ``actor`` on the curve's episodes; the best so far is kept."""
        res = evaluate_chunked(self.env_id, LatentPolicyFn(self.policy, actor), self.cfg.eval_episodes,
                               seed=CURVE_SEED_BASE)
        point = [self.env_steps, res.success_rate, res.return_mean]
        self.run.log(self.env_steps, {"eval/success_rate": res.success_rate, "eval/return_mean": res.return_mean})
        if self.cfg.keep_best and (self.best is None or point[1:] >= self.best[1:]):
            self.best = point
            self.best_actor = {k: v.detach().clone() for k, v in actor.state_dict().items()}
        return point

    def select_actor(self, final: LatentActor) -> tuple[LatentActor, dict]:
        """The actor a run returns, and how it was chosen: with ``keep_best``, the best curve point or the
        final actor, evaluated on the same episodes (a tie goes to the final actor); otherwise ``final``."""
        if not self.cfg.keep_best or not self.curve:
            return final, {"selected": "final", "selected_env_steps": self.env_steps}
        last = self.curve[-1] if self.curve[-1][0] == self.env_steps else self._evaluate(final)
        how = {"selected_env_steps": int(self.best[0]), "selected_curve_success": self.best[1],
               "final_curve_success": last[1]}
        if self.best[0] == self.env_steps:
            return final, {"selected": "final", **how}
        chosen = LatentActor(final.cfg)
        chosen.load_state_dict(self.best_actor)
        return chosen.eval(), {"selected": "best", **how}

    def tensors(self) -> dict:
        """Tensors for checkpoints beside :meth:`state` (the best actor's weights, when kept)."""
        return {"best_actor": self.best_actor} if self.best_actor is not None else {}

    def out_of_time(self) -> bool:
        """The wall-clock budget (``max_minutes``) is spent."""
        return self.cfg.max_minutes > 0 and time.time() - self.t0 >= 60.0 * self.cfg.max_minutes

    def done(self) -> bool:
        """Training should stop: the env-step budget or the wall-clock budget is spent."""
        return self.env_steps >= self.cfg.env_steps or self.out_of_time()

    def due_checkpoint(self) -> bool:
        if self.env_steps >= self.next_ckpt or self.done():
            self.next_ckpt = (self.env_steps // self.cfg.checkpoint_every + 1) * self.cfg.checkpoint_every
            return True
        return False

    def state(self) -> dict:
        return {"env_steps": self.env_steps, "episodes": self.episodes, "curve": self.curve,
                "fallbacks": self.fallbacks, "chunks": self.chunks, "best": self.best}


__all__ = ["CURVE_SEED_BASE", "TRAIN_SEED_BASE", "ChunkGate", "DSRLConfig", "DSRLConfigError", "EnvWrapper",
           "LatentPolicyFn", "Progress", "episode_value", "make_chunk_gate", "make_task_env"]
