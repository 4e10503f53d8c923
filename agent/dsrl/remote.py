"""DSRL on a robot: the learner's side of the chunk loop, driven by what a robot reports.

In process, SB3 (or DSRL-NA's loop) steps a :class:`~steer.agent.dsrl.latent_env.LatentNoiseEnv`. On a robot
the BC policy runs in the robot's policy node; the learner only sees observations, the latents the node
executed and episode outcomes, and answers with latents. :class:`RobotDSRL` is that loop as plain calls,
free of any transport (``steer adapt`` feeds it from ROS 2 topics; tests feed it directly):

* :meth:`RobotDSRL.start_episode` / :meth:`~RobotDSRL.end_episode` / :meth:`~RobotDSRL.discard_episode`;
* :meth:`RobotDSRL.observe` on every observation: on the last step of a chunk it returns the latent for
  the next chunk (chosen from that observation: the node needs it *before* the next chunk starts, and it
  never waits). An episode's chunk 0 is therefore the node's lead-in, holding still
  (:data:`~steer.robot.spec.STEERED_LEAD_IN_STEPS`, one step): chunk 1 is chosen from the episode's first
  observation, so the start of the episode is steered;
* :meth:`RobotDSRL.executed`: what the node ran for a chunk (the learner's latent, or the baseline's on a
  fallback); the learner stores the latent that ran;
* :meth:`RobotDSRL.update`: gradient updates owed (UTD per stored transition), one call at a time, so
  the caller can answer the robot between two of them.

The same pieces as in process: the SB3 DSRL-SAC model of :func:`~steer.agent.dsrl.sac.build_sac` (its
networks, entropy tuning, replay buffer and checkpoint state), the conservative :class:`ChunkGate`
(its baseline L_b measured on this robot: the warm-up episodes run the baseline's noise), and
:class:`Progress` for metrics. Transition, reward and bootstrap follow :class:`LatentNoiseEnv`: one
transition per executed chunk, the chunk's rewards (success at the end, minus ``reward_offset`` per
step), terminal on success, a time-out (failure after the robot's step limit) bootstraps.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from steer.agent.bc import base_latents
from steer.agent.checkpoint import load_checkpoint, save_checkpoint
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.core import ChunkGate, DSRLConfig, Progress
from steer.agent.dsrl.latent_actor import LatentActor, save_dsrl_policy
from steer.agent.runlog import RunLog
from steer.robot.spec import steered_chunk_start

CHECKPOINT = "adapt_trainer"
"""Name of the learner's resumable checkpoint in the run's checkpoints."""


class SuccessDetector(Protocol):
    """A learned success detector: judges an episode from its observations where the robot has no success
    topic and the operator gave no mark (None: cannot tell; the episode is then not learned from)."""

    def __call__(self, observations: np.ndarray) -> bool | None:
        """``observations``: [steps, obs_dim] in the policy's order."""


class ChunkLearner(Protocol):
    """What :class:`RobotDSRL` needs of an algorithm: choose, store, update, save."""

    latent_steps: int

    def act(self, obs_norm: np.ndarray, deterministic: bool) -> np.ndarray:
        """A latent [noise_dim] for one normalized observation."""

    def store(self, obs_norm: np.ndarray, w: np.ndarray, reward: float, next_obs_norm: np.ndarray,
              terminated: bool, truncated: bool) -> None:
        """One executed chunk."""

    def update(self, n: int) -> None:
        """``n`` gradient updates."""

    def actor(self) -> LatentActor:
        """The deterministic latent actor."""

    def state(self) -> tuple[dict, dict]:
        """(tensors, JSON meta) for a checkpoint."""

    def load(self, state: dict, meta: dict) -> None:
        """Restore :meth:`state`."""


class _Spaces(gym.Env):
    """An env that only carries spaces: SB3 builds its model from them; nothing ever steps it."""

    def __init__(self, obs_dim: int, noise_dim: int, bound: float):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-bound, bound, (noise_dim,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):  # pragma: no cover - never stepped
        raise RuntimeError("the robot learner's model is driven by RobotDSRL, not stepped")


class SacChunkLearner:
    """DSRL-SAC (the in-process SB3 model of :func:`~steer.agent.dsrl.sac.build_sac`) fed one chunk at a time."""

    def __init__(self, policy: DiffusionPolicy, cfg: DSRLConfig, run: RunLog, env_steps=lambda: 0):
        from stable_baselines3.common.vec_env import DummyVecEnv

        from steer.agent.dsrl.sac import _forwarding_logger, build_sac

        pc = policy.cfg
        venv = DummyVecEnv([lambda: _Spaces(pc.obs_dim, pc.noise_dim, cfg.latent_noise_bound)])
        self.cfg, self.policy = cfg, policy
        self.model = build_sac(policy, venv, cfg)
        self.model.set_logger(_forwarding_logger(run, env_steps))
        self.model._current_progress_remaining = 1.0
        # Latents are chosen by a copy of the actor: SB3's actor keeps per-call state (its distribution), so
        # the thread that answers the robot must not share it with the one that trains it.
        import copy

        self._acting = copy.deepcopy(self.model.actor)
        self._acting.set_training_mode(False)

    @property
    def latent_steps(self) -> int:
        return int(self.model.num_timesteps)

    def act(self, obs_norm: np.ndarray, deterministic: bool) -> np.ndarray:
        with torch.no_grad():
            scaled = self._acting(torch.as_tensor(np.asarray(obs_norm, np.float32))[None], deterministic=deterministic)
        return np.asarray(self.model.policy.unscale_action(scaled.numpy())[0], dtype=np.float32)

    def _sync(self) -> None:
        self._acting.load_state_dict(self.model.actor.state_dict())

    def store(self, obs_norm, w, reward, next_obs_norm, terminated, truncated) -> None:
        m = self.model
        scaled = m.policy.scale_action(np.asarray(w, np.float32)[None])
        # SB3's convention: done on either ending; a time-out keeps its bootstrap (TimeLimit.truncated).
        m.replay_buffer.add(np.asarray(obs_norm, np.float32)[None], np.asarray(next_obs_norm, np.float32)[None],
                            scaled, np.array([reward], np.float32), np.array([terminated or truncated]),
                            [{"TimeLimit.truncated": bool(truncated and not terminated)}])
        m.num_timesteps += 1

    def update(self, n: int) -> None:
        self.model.train(gradient_steps=n, batch_size=self.cfg.batch_size)
        self._sync()

    def actor(self) -> LatentActor:
        from steer.agent.dsrl.sac import latent_actor_from_sb3

        return latent_actor_from_sb3(self.model, self.cfg, self.policy)

    def state(self) -> tuple[dict, dict]:
        from steer.agent.dsrl.sac import _sac_state, sac_meta

        return _sac_state(self.model), sac_meta(self.model)

    def load(self, state: dict, meta: dict) -> None:
        from steer.agent.dsrl.sac import restore_sac

        restore_sac(self.model, state, meta)
        self._sync()


def make_chunk_learner(policy: DiffusionPolicy, cfg: DSRLConfig, run: RunLog, env_steps=lambda: 0) -> ChunkLearner:
    """The chunk learner of ``cfg.algorithm``."""
    if cfg.algorithm == "sac":
        return SacChunkLearner(policy, cfg, run, env_steps)
    if cfg.algorithm == "na":
        from steer.agent.dsrl.na import NaChunkLearner

        return NaChunkLearner(policy, cfg, run, env_steps)
    raise ValueError(f"unknown DSRL algorithm {cfg.algorithm!r}; choose 'sac' or 'na'.")


@dataclass
class RobotEpisode:
    """One episode on the robot as the learner saw it."""

    episode: str
    decisions: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """chunk → (observation the latent was chosen from, latent sent)."""
    executed: dict[int, tuple[np.ndarray, str, np.ndarray | None]] = field(default_factory=dict)
    """chunk → (noise the node ran, ``learner`` or ``baseline``, the observation it ran on if reported)."""
    observations: list[np.ndarray] = field(default_factory=list)
    """Every observation of the episode, in order."""
    starts: dict[int, int] = field(default_factory=dict)
    """chunk → the step it started at (from the node's executed chunks; chunk 0 at step 0)."""
    next_chunk: int = 1
    """The chunk the next decision is for."""
    decide_at: int = -1
    """The step whose observation chooses the next chunk's latent (the last step before it starts)."""
    plan: str = ""
    """The gate's plan for the episode: ``explorer``, ``baseline`` or ``mix``."""
    mark: bool | None = None
    """The operator's mark (overrides the success topic)."""


def _ran_on(ep: RobotEpisode, chunk: int) -> np.ndarray | None:
    """The observation ``chunk`` ran on, as the node reported it; else the one its latent was chosen from (a
    step earlier); None when the learner has neither."""
    executed = ep.executed.get(chunk)
    if executed is not None and executed[2] is not None:
        return executed[2]
    decision = ep.decisions.get(chunk)
    return None if decision is None else decision[0]


@dataclass(frozen=True)
class EpisodeOutcome:
    """A finished, learned-from episode."""

    episode: str
    success: bool
    steps: int
    transitions: int
    plan: str
    learner_chunks: int
    """Chunks that ran the learner's latent (the rest ran the baseline's noise)."""


class RobotDSRL:
    """The DSRL learner of one robot, one call per thing the robot reports (see the module docstring)."""

    def __init__(self, policy: DiffusionPolicy, cfg: DSRLConfig, run: RunLog, resume: bool = False,
                 success_detector: SuccessDetector | None = None):
        if cfg.num_envs != 1:
            raise ValueError("a robot is one environment: num_envs must be 1")
        cfg.check_policy(policy)
        for p in policy.parameters():
            p.requires_grad_(False)
        self.cfg, self.policy, self.run = cfg, policy, run
        self.ckpt_dir = Path(run.checkpoint_dir)
        saved = None
        if resume and (self.ckpt_dir / f"{CHECKPOINT}.safetensors").exists():
            saved = load_checkpoint(self.ckpt_dir, CHECKPOINT)
        meta = saved[1] if saved else {}
        if saved:
            run.rewind(int(meta["env_steps"]))
        torch.manual_seed(cfg.seed)
        self.progress = Progress(cfg, run, policy, "", progress=False, meta=meta)
        self.progress.next_eval = float("inf")  # no simulator here: the robot's own episodes are the curve
        self.learner = make_chunk_learner(policy, cfg, run, lambda: self.progress.env_steps)
        if saved:
            self.learner.load(saved[0], meta["learner"])
        self.rng = np.random.default_rng(cfg.seed + 7)
        if saved and "rng" in meta:
            self.rng.bit_generator.state = meta["rng"]
        self.gate = ChunkGate(cfg, policy, meta.get("conservative")) if cfg.conservative.enabled else None
        self.detector = success_detector
        self.chunk_len, self.noise_dim = policy.cfg.chunk_len, policy.cfg.noise_dim
        self.warmup_latent = cfg.warmup_latent_steps(self.chunk_len)
        self.owed_updates = 0
        self.lock = threading.RLock()
        """Held while the replay buffer or the networks' training state change (:meth:`end_episode`,
        :meth:`update`, :meth:`checkpoint`): updates may run on another thread while this one answers the
        robot; choosing a latent reads the actor without it (it may see a half-applied step)."""
        self.current: RobotEpisode | None = None
        self.outcomes: list[EpisodeOutcome] = list()
        self.discarded = 0
        self.deterministic = False
        """Evaluation: run the deterministic actor on every chunk (no gate, nothing stored)."""

    # -- observations and latents ----------------------------------------------------------------
    def normalize(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.policy.obs_norm.normalize(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    @property
    def warming_up(self) -> bool:
        """Before ``warmup_env_steps``: every chunk runs the baseline's noise and nothing is updated."""
        return self.learner.latent_steps < self.warmup_latent

    def start_episode(self, episode: str) -> None:
        """A new episode began on the robot (an unfinished one is discarded)."""
        if self.current is not None:
            self.discard_episode()
        plan = self.gate.plan_kind(0) if self.gate is not None else ("baseline" if self.warming_up else "explorer")
        first = steered_chunk_start(1, self.chunk_len)  # after the node's lead-in
        self.current = RobotEpisode(episode, plan=plan, starts={0: 0, 1: first}, decide_at=first - 1)

    def observe(self, obs: np.ndarray) -> tuple[int, np.ndarray] | None:
        """Take the episode's next observation; on a chunk's last step, (next chunk, its latent) to send."""
        ep = self.current
        if ep is None:
            return None
        ep.observations.append(np.asarray(obs, dtype=np.float32))
        step = len(ep.observations) - 1
        if step != ep.decide_at:
            return None
        chunk = ep.next_chunk
        w = self._choose(ep.observations[-1])
        ep.decisions[chunk] = (ep.observations[-1], w)
        # Unless the node reports otherwise, the chunk starts on the next step and runs chunk_len steps.
        ep.next_chunk, ep.decide_at = chunk + 1, step + self.chunk_len
        return chunk, w

    def _choose(self, obs: np.ndarray) -> np.ndarray:
        obs_norm = self.normalize(obs)
        if self.deterministic:
            return self.learner.act(obs_norm, deterministic=True)
        if self.warming_up:
            return base_latents(self.policy, self.rng, 1)[0]
        sampled = self.learner.act(obs_norm, deterministic=False)
        if self.gate is None:
            return sampled
        return self.gate.latents(sampled[None], lambda: self.learner.act(obs_norm, deterministic=True)[None],
                                 self.rng)[0]

    def executed(self, episode: str, chunk: int, noise: np.ndarray, source: str,
                 obs: np.ndarray | None = None) -> None:
        """What the node ran for ``chunk`` of ``episode`` (ignored for another episode).

        ``obs``, the observation the node ran it on, re-aligns the learner's step count where it missed an
        observation (a lost message) or where a watchdog trip restarted a chunk: that observation is the
        step the chunk started at."""
        ep = self.current
        if ep is None or ep.episode != episode:
            return
        obs = None if obs is None else np.asarray(obs, dtype=np.float32)
        ep.executed[chunk] = (np.asarray(noise, np.float32).reshape(-1), source, obs)
        if obs is None or not ep.observations:
            return
        # The step the chunk started at is the one whose observation the node ran on. A watchdog trip, or
        # an observation this learner missed, moves the node's chunk boundaries: follow the node's.
        recent = range(len(ep.observations) - 1, max(-1, len(ep.observations) - 2 * self.chunk_len - 1), -1)
        j = next((i for i in recent if np.array_equal(ep.observations[i], obs)), None)
        if j is None:
            return
        ep.starts[chunk] = j
        if chunk + 1 >= ep.next_chunk:
            ep.next_chunk, ep.decide_at = chunk + 1, j + self.chunk_len - 1

    def mark(self, success: bool) -> None:
        """The operator's judgement of the current episode."""
        if self.current is not None:
            self.current.mark = bool(success)

    # -- episode ends -----------------------------------------------------------------------------
    def discard_episode(self) -> None:
        """Drop the episode in flight (the node died, the session ended, paused): nothing is learned from it."""
        if self.current is None:
            return
        if self.gate is not None and not self.deterministic:
            self.gate.discard_episode(0)
        self.current = None
        self.discarded += 1

    def end_episode(self, steps: int, is_success: bool | None, terminal: bool = True) -> EpisodeOutcome | None:
        """See :meth:`_end_episode` (under :attr:`lock`)."""
        with self.lock:
            return self._end_episode(steps, is_success, terminal)

    def _end_episode(self, steps: int, is_success: bool | None, terminal: bool = True) -> EpisodeOutcome | None:
        """The episode ended after ``steps`` steps; ``is_success`` from the success topic (None: none).

        The outcome is the operator's mark if there is one, else ``is_success``, else the success
        detector's; without any, the episode is discarded. ``terminal``: a success ends the task
        (no bootstrap); a failure at the step limit bootstraps (a time-out). Returns the outcome, or
        None when nothing was learned."""
        ep = self.current
        if ep is None:
            return None
        success = ep.mark if ep.mark is not None else is_success
        if success is None and self.detector is not None and ep.observations:
            success = self.detector(np.stack(ep.observations))
        if success is None or steps < 1:
            self.discard_episode()
            return None
        # Chunk k runs from its start to the next chunk's (chunk 0: the lead-in; then chunk_len steps unless the
        # node restarted one).
        starts = [0]
        while starts[-1] < steps:
            k = len(starts)
            starts.append(ep.starts.get(k, starts[-1] + self.chunk_len) if ep.starts.get(k, -1) > starts[-1]
                          else starts[-1] + self.chunk_len)
        n_chunks = len(starts) - 1
        self.current = None
        if self.deterministic:
            outcome = EpisodeOutcome(ep.episode, bool(success), steps, 0, "eval",
                                     sum(e[1] == "learner" for e in ep.executed.values()))
            self.outcomes.append(outcome)
            return outcome
        offset = self.cfg.reward_offset
        stored, infos, rewards, dones = 0, [], [], []
        for k in range(n_chunks):
            chunk_steps = max(1, min(starts[k + 1], steps) - starts[k])
            last = k == n_chunks - 1
            reward = -offset * chunk_steps + (1.0 if (last and success) else 0.0)
            info = {"chunk_steps": chunk_steps, **({"is_success": bool(success)} if last else {})}
            rewards.append(reward), dones.append(last), infos.append(info)
            if k == 0 or k not in ep.decisions or k not in ep.executed:
                continue  # chunk 0 is the node's lead-in (it held still): no latent ran
            # The transition that happened: the observation the node ran the chunk on (the latent was chosen
            # one step earlier, the freshest the learner could act on), the latent that ran, and the next
            # chunk's observation.
            nxt = ep.observations[-1] if last else _ran_on(ep, k + 1)
            if nxt is None:
                continue
            obs, nxt = self.normalize(_ran_on(ep, k)), self.normalize(nxt)
            w = np.clip(ep.executed[k][0], -self.cfg.latent_noise_bound, self.cfg.latent_noise_bound)
            self.learner.store(obs, w, reward, nxt, terminated=last and bool(success) and terminal,
                               truncated=last and not (bool(success) and terminal))
            stored += 1
        if not self.warming_up:
            self.owed_updates += stored * self.cfg.utd
        self.progress.on_transition(infos, np.array(dones), [float(sum(rewards)) if d else None for d in dones])
        if self.gate is not None:
            for r, d, info in zip(rewards, dones, infos):
                self.gate.record(np.array([r]), np.array([d]), [info], self.progress.env_steps,
                                 self.warming_up, self.run)
        outcome = EpisodeOutcome(ep.episode, bool(success), steps, stored, ep.plan,
                                 sum(e[1] == "learner" for e in ep.executed.values()))
        self.outcomes.append(outcome)
        return outcome

    # -- learning ------------------------------------------------------------------------------------
    def update(self, n: int = 1) -> int:
        """Up to ``n`` of the owed gradient updates; returns how many ran."""
        with self.lock:
            n = min(n, self.owed_updates)
            if n > 0:
                self.learner.update(n)
                self.owed_updates -= n
            return n

    @property
    def done(self) -> bool:
        """The env-step budget or the wall-clock budget (``max_minutes``) is spent."""
        return self.progress.done()

    def gate_status(self) -> dict[str, float]:
        """L_b, (1 − α)·L_b and ρ of the gate (zeros without one)."""
        if self.gate is None:
            return {"baseline_success": 0.0, "threshold": 0.0, "rho": 1.0}
        g = self.gate.gated.gate
        return {"baseline_success": g.baseline_bounds()[0], "threshold": g.threshold(), "rho": g.rho()}

    def checkpoint(self) -> None:
        """Save everything to resume from (episodes in flight are not in it)."""
        with self.lock:
            self._checkpoint()

    def _checkpoint(self) -> None:
        state, lmeta = self.learner.state()
        meta = {**self.progress.state(), "learner": lmeta, "config": asdict(self.cfg),
                "rng": self.rng.bit_generator.state,
                **({"conservative": self.gate.state()} if self.gate is not None else {})}
        save_checkpoint(self.ckpt_dir, CHECKPOINT, state, meta)

    def save_policy(self, meta: dict[str, Any]) -> None:
        """The DSRL policy (latent actor + the BC policy), as ``steer dsrl`` saves it."""
        save_dsrl_policy(self.ckpt_dir, self.learner.actor(), self.policy,
                         {**meta, "algorithm": self.cfg.algorithm, "env_steps": self.progress.env_steps})


__all__ = ["CHECKPOINT", "ChunkLearner", "EpisodeOutcome", "RobotDSRL", "RobotEpisode", "SacChunkLearner",
           "SuccessDetector", "make_chunk_learner"]
