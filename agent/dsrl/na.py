"""DSRL-NA (noise-aliased DSRL).

Different latent noises can decode to the same action chunk, and transitions
recorded as executed actions (demos, other policies) carry no noise at all. DSRL-NA
therefore learns

* Q_A(s, a) on executed, normalized action chunks with a SAC-style TD target whose
  next action is the base policy decoded from the actor's next noise, and
* Q_W(s, w) = Q_A(s, π_dp(s, w)) by regression (``na_distill_steps`` steps per update,
  on noises drawn from the actor and from the BC baseline's N(0, I) clipped to ±b),

and the latent actor maximizes Q_W with an entropy bonus. Because Q_A never needs w,
the replay buffer can be prefilled with demonstration chunks.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from steer.agent.bc import base_latents
from steer.agent.checkpoint import load_checkpoint, save_checkpoint
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.core import DSRLConfig, EnvWrapper, Progress, make_chunk_gate, make_task_env
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig, mlp
from steer.agent.dsrl.latent_env import LatentNoiseEnv, SafeSet
from steer.agent.runlog import RunLog


class QNet(nn.Module):
    """Q(s, x) as an MLP over [obs, x] (x: an action chunk for Q_A, a scaled latent for Q_W)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, layer_norm: bool):
        super().__init__()
        self.body = mlp(in_dim, hidden, layers, layer_norm)
        self.head = nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([obs, act], dim=-1))).squeeze(-1)


class TwinQ(nn.Module):
    """Two Q networks; :meth:`min` is the clipped double-Q estimate."""

    def __init__(self, in_dim: int, hidden: int, layers: int, layer_norm: bool):
        super().__init__()
        self.q1, self.q2 = QNet(in_dim, hidden, layers, layer_norm), QNet(in_dim, hidden, layers, layer_norm)

    def forward(self, obs, act):
        return self.q1(obs, act), self.q2(obs, act)

    def min(self, obs, act):
        a, b = self(obs, act)
        return torch.minimum(a, b)


class GaussianLatentActor(LatentActor):
    """Squashed-Gaussian latent actor; its deterministic part is a plain :class:`LatentActor`."""

    def __init__(self, cfg: LatentActorConfig):
        super().__init__(cfg)
        self.log_std = nn.Linear(cfg.hidden_dim, cfg.noise_dim)

    def sample(self, obs_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w in [-b, b] and its log-probability (of the squashed unit-box variable, as in SAC)."""
        h = self.latent_pi(obs_norm)
        mu, log_std = self.mu(h), self.log_std(h).clamp(-20, 2)
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        y = torch.tanh(u)
        logp = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        logp = logp - torch.log(1 - y.pow(2) + 1e-6).sum(-1)
        return y * self.cfg.latent_noise_bound, logp


class ChunkReplay:
    """Replay of executed chunks: normalized obs, the executed (normalized, padded) action chunk, reward, next
    obs. No latent: Q_A learns on executed actions, so demonstrations fit in as well."""

    def __init__(self, capacity: int, obs_dim: int, chunk_dim: int):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.data = {"obs": np.zeros((capacity, obs_dim), np.float32), "next_obs": np.zeros((capacity, obs_dim), np.float32),
                     "act": np.zeros((capacity, chunk_dim), np.float32),
                     "rew": np.zeros(capacity, np.float32), "done": np.zeros(capacity, np.float32)}

    def add(self, **row: np.ndarray) -> None:
        for k, v in row.items():
            self.data[k][self.pos] = v
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, n)
        return {k: torch.from_numpy(v[idx]) for k, v in self.data.items()}


def _pad_chunk(executed: np.ndarray, chunk_len: int) -> np.ndarray:
    if len(executed) < chunk_len:
        executed = np.concatenate([executed, np.repeat(executed[-1:], chunk_len - len(executed), axis=0)])
    return executed


def prefill_from_demos(buffer: ChunkReplay, policy: DiffusionPolicy, demos, reward_offset: float) -> int:
    """Add demonstration chunks (every chunk_len steps) as executed-action transitions; returns how many."""
    h = policy.cfg.chunk_len
    n = 0
    with torch.no_grad():
        for obs, act, success in zip(demos.observations, demos.actions, demos.successes):
            t_len = len(act)
            for t in range(0, t_len, h):
                chunk = _pad_chunk(act[t:t + h], h)
                steps = min(h, t_len - t)
                end = t + steps
                # The task's reward is 1 on the success step only.
                r = float(success and end == t_len) - reward_offset * steps
                buffer.add(obs=policy.obs_norm.normalize(torch.from_numpy(obs[t])).numpy(),
                           next_obs=policy.obs_norm.normalize(torch.from_numpy(obs[end])).numpy(),
                           act=policy.act_norm.normalize(torch.from_numpy(chunk)).numpy().ravel(),
                           rew=r, done=float(success and end == t_len))
                n += 1
    return n


class NaLearner:
    """DSRL-NA's networks, optimizers, replay buffer and update: what the in-process loop (:func:`train_na`) and
    the robot learner (:class:`NaChunkLearner`) share. ``rng`` draws minibatches and the baseline's noise."""

    def __init__(self, policy: DiffusionPolicy, cfg: DSRLConfig, rng: np.random.Generator):
        pc = policy.cfg
        self.policy, self.cfg, self.rng = policy, cfg, rng
        self.acfg = LatentActorConfig(pc.obs_dim, pc.noise_dim, cfg.hidden_dim, cfg.num_layers, cfg.layer_norm,
                                      cfg.latent_noise_bound)
        self.actor = GaussianLatentActor(self.acfg)
        self.q_a, self.q_w = (TwinQ(pc.obs_dim + pc.noise_dim, cfg.hidden_dim, cfg.num_layers, cfg.layer_norm)
                              for _ in range(2))
        self.q_a_targ = TwinQ(pc.obs_dim + pc.noise_dim, cfg.hidden_dim, cfg.num_layers, cfg.layer_norm)
        self.q_a_targ.load_state_dict(self.q_a.state_dict())
        self.log_alpha = torch.full((1,), float(np.log(cfg.init_alpha)), requires_grad=True)
        self.opt = {"actor": torch.optim.Adam(self.actor.parameters(), lr=cfg.lr),
                    "q_a": torch.optim.Adam(self.q_a.parameters(), lr=cfg.lr),
                    "q_w": torch.optim.Adam(self.q_w.parameters(), lr=cfg.lr),
                    "alpha": torch.optim.Adam([self.log_alpha], lr=cfg.lr)}
        self.buf = ChunkReplay(cfg.buffer_size, pc.obs_dim, pc.noise_dim)

    def q_a_step(self, batch: dict[str, torch.Tensor], w_next: torch.Tensor, entropy_cost: torch.Tensor | float
                 ) -> float:
        """One TD regression of Q_A on ``batch``, the next chunk decoded from the latents ``w_next``
        [B, noise_dim] and ``entropy_cost`` (α · log π of ``w_next``; 0 evaluates a fixed latent policy, e.g.
        the BC baseline's noise) subtracted from the target's next value. Returns the mean critic loss; the
        target network moves in :meth:`sync_target`."""
        pc, cfg = self.policy.cfg, self.cfg
        with torch.no_grad():
            a_next = self.policy.sample_normalized(batch["next_obs"], w_next.view(-1, pc.chunk_len, pc.action_dim))
            q_next = self.q_a_targ.min(batch["next_obs"], a_next.flatten(1)) - entropy_cost
            target = batch["rew"] + cfg.gamma * (1 - batch["done"]) * q_next
        q1, q2 = self.q_a(batch["obs"], batch["act"])
        loss_q = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.opt["q_a"].zero_grad()
        loss_q.backward()
        self.opt["q_a"].step()
        return loss_q.item() / 2

    def sync_target(self) -> None:
        """Move Q_A's target network a step ``tau`` toward Q_A (Polyak averaging)."""
        with torch.no_grad():
            for pt, p in zip(self.q_a_targ.parameters(), self.q_a.parameters()):
                pt.lerp_(p, self.cfg.tau)

    def update(self) -> dict[str, float]:
        """One update of Q_A, Q_W (``na_distill_steps`` regressions), the actor and the entropy coefficient."""
        policy, cfg, rng, pc = self.policy, self.cfg, self.rng, self.policy.cfg
        actor, q_a, q_w, log_alpha, opt = self.actor, self.q_a, self.q_w, self.log_alpha, self.opt
        b = cfg.latent_noise_bound
        batch = self.buf.sample(rng, cfg.batch_size)
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            w_next, logp_next = actor.sample(batch["next_obs"])
        loss_q = self.q_a_step(batch, w_next, alpha * logp_next)
        # Distill Q_W from Q_A on noises from the actor and from the BC baseline.
        k = cfg.na_distill_steps
        with torch.no_grad():
            o_rep = batch["obs"].repeat(k, 1)
            w_actor, _ = actor.sample(o_rep)
            w_base = torch.from_numpy(base_latents(policy, rng, len(o_rep)))
            w_d = torch.where(torch.rand(len(o_rep), 1) < 0.5, w_actor, w_base)
            a_d = policy.sample_normalized(o_rep, w_d.view(-1, pc.chunk_len, pc.action_dim)).flatten(1)
            q_d = q_a.min(o_rep, a_d)
        loss_w = torch.zeros(())
        for i in range(k):
            sl = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
            w1, w2 = q_w(o_rep[sl], w_d[sl] / b)
            loss_w = F.mse_loss(w1, q_d[sl]) + F.mse_loss(w2, q_d[sl])
            opt["q_w"].zero_grad()
            loss_w.backward()
            opt["q_w"].step()
        w_pi, logp = actor.sample(batch["obs"])
        loss_pi = (alpha * logp - q_w.min(batch["obs"], w_pi / b)).mean()
        opt["actor"].zero_grad()
        loss_pi.backward()
        opt["actor"].step()
        loss_alpha = -(log_alpha * (logp.detach() + cfg.target_entropy)).mean()
        opt["alpha"].zero_grad()
        loss_alpha.backward()
        opt["alpha"].step()
        self.sync_target()
        return {"losses/q": loss_q, "losses/q_w": loss_w.item() / 2, "losses/actor": loss_pi.item(),
                "losses/alpha": float(alpha)}

    def actor_mean(self, o: torch.Tensor) -> torch.Tensor:
        return LatentActor.forward(self.actor, o)

    def deterministic_actor(self) -> LatentActor:
        det = LatentActor(self.acfg)
        det.load_state_dict({k: v for k, v in self.actor.state_dict().items() if not k.startswith("log_std")})
        return det.eval()

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(tensors, meta) of a checkpoint."""
        return ({"actor": self.actor.state_dict(), "q_a": self.q_a.state_dict(), "q_w": self.q_w.state_dict(),
                 "q_a_targ": self.q_a_targ.state_dict(), "log_alpha": self.log_alpha.detach(),
                 **{f"opt_{n}": o.state_dict() for n, o in self.opt.items()},
                 "buffer": self.buf.data, "torch_rng": torch.get_rng_state()},
                {"buffer_size": self.buf.size, "buffer_pos": self.buf.pos, "rng": self.rng.bit_generator.state})

    def load(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        for name, mod in (("actor", self.actor), ("q_a", self.q_a), ("q_w", self.q_w), ("q_a_targ", self.q_a_targ)):
            mod.load_state_dict(state[name])
        for name, o in self.opt.items():
            o.load_state_dict(state[f"opt_{name}"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for k in self.buf.data:  # checkpoints of older versions also hold an unused "w" column
            self.buf.data[k][...] = state["buffer"][k]
        self.buf.size, self.buf.pos = int(meta["buffer_size"]), int(meta["buffer_pos"])
        self.rng.bit_generator.state = meta["rng"]
        torch.set_rng_state(state["torch_rng"])


def train_na(policy: DiffusionPolicy, env_id: str, cfg: DSRLConfig, run: RunLog, resume: bool, progress: bool,
             env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None
             ) -> tuple[LatentActor, dict[str, Any]]:
    """Train DSRL-NA; returns the deterministic latent actor and details (``progress``, ``gate``)."""
    pc = policy.cfg
    rng = np.random.default_rng(cfg.seed)
    na = NaLearner(policy, cfg, rng)
    actor, buf = na.actor, na.buf
    b = cfg.latent_noise_bound
    ckpt_dir = Path(run.checkpoint_dir)
    meta: dict[str, Any] = {}
    state: dict[str, Any] = {}
    if resume and (ckpt_dir / "dsrl_trainer.safetensors").exists():
        state, meta = load_checkpoint(ckpt_dir, "dsrl_trainer")
        na.load(state, meta)
        run.rewind(int(meta["env_steps"]))
    elif cfg.na_prefill_demos:
        from steer.sim.demos import load_demos

        n = prefill_from_demos(buf, policy, load_demos(Path(cfg.na_prefill_demos)), cfg.reward_offset)
        run.log(0, {"charts/prefilled_transitions": n})
    prog = Progress(cfg, run, policy, env_id, progress, meta, state)
    envs = [LatentNoiseEnv(make_task_env(env_id, env_wrapper), policy, b, cfg.reward_offset, safe_set,
                           fallback_seed=cfg.fallback_seed(i)) for i in range(cfg.num_envs)]
    seed0 = cfg.train_seed(prog.episodes)
    obs = np.stack([e.reset(seed=seed0 + i)[0] for i, e in enumerate(envs)])
    next_seed = seed0 + len(envs)
    ep_ret = np.zeros(len(envs))
    warmup_latent = cfg.warmup_latent_steps(pc.chunk_len)
    latent_steps = int(meta.get("latent_steps", 0))
    gate = make_chunk_gate(cfg, policy, meta)
    updates = 0
    actor_mean = na.actor_mean

    while not prog.done():
        warm = latent_steps < warmup_latent
        with torch.no_grad():
            if warm:
                w = base_latents(policy, rng, len(envs))
            else:
                w = actor.sample(torch.from_numpy(obs))[0].numpy()
                if gate is not None:
                    w = gate.latents(w, lambda: actor_mean(torch.from_numpy(obs)).numpy(), rng)
        infos, dones, rets, rewards = [], np.zeros(len(envs), bool), [], np.zeros(len(envs))
        for i, env in enumerate(envs):
            nobs, r, term, trunc, info = env.step(w[i])
            act_norm = policy.act_norm.normalize(torch.from_numpy(_pad_chunk(info["executed_actions"], pc.chunk_len)))
            buf.add(obs=obs[i], next_obs=nobs, act=act_norm.numpy().ravel(), rew=r, done=float(term))
            ep_ret[i] += r
            rewards[i] = r
            infos.append(info)
            dones[i] = term or trunc
            rets.append(float(ep_ret[i]) if dones[i] else None)
            if dones[i]:
                ep_ret[i] = 0.0
                nobs, _ = env.reset(seed=next_seed)
                next_seed += 1
            obs[i] = nobs
        latent_steps += len(envs)
        prog.on_transition(infos, dones, rets)
        if gate is not None:
            gate.record(rewards, dones, infos, prog.env_steps, warm, run)
        if latent_steps >= warmup_latent and buf.size >= cfg.batch_size:
            for _ in range(cfg.na_utd * len(envs)):
                losses = na.update()
                updates += 1
                if updates % 100 == 1:
                    run.log(prog.env_steps, losses)
            prog.maybe_eval(na.deterministic_actor)
        if prog.due_checkpoint():
            state, nmeta = na.state()
            save_checkpoint(ckpt_dir, "dsrl_trainer", {**state, **prog.tensors()},
                            {**prog.state(), "latent_steps": latent_steps, **nmeta, "config": asdict(cfg),
                             **({"conservative": gate.state()} if gate is not None else {})})
    prog.bar.close()
    for e in envs:
        e.close()
    return na.deterministic_actor(), {"progress": prog, "gate": gate.gated if gate is not None else None}


class NaChunkLearner:
    """DSRL-NA fed one chunk at a time (the robot learner, :class:`steer.agent.dsrl.remote.RobotDSRL`).

    It stores the chunk the frozen policy decodes from the learner's observation and the latent that ran
    (Q_A learns on actions, so it needs no more than the BC policy the node runs)."""

    def __init__(self, policy: DiffusionPolicy, cfg: DSRLConfig, run: RunLog, env_steps=lambda: 0):
        self.policy, self.cfg, self.run, self.env_steps = policy, cfg, run, env_steps
        self.na = NaLearner(policy, cfg, np.random.default_rng(cfg.seed))
        self.latent_steps = 0
        self.updates = 0

    def act(self, obs_norm: np.ndarray, deterministic: bool) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(np.asarray(obs_norm, np.float32))[None]
            w = self.na.actor_mean(o) if deterministic else self.na.actor.sample(o)[0]
        return w[0].numpy().astype(np.float32)

    def store(self, obs_norm, w, reward, next_obs_norm, terminated, truncated) -> None:
        pc = self.policy.cfg
        with torch.no_grad():
            o = torch.as_tensor(np.asarray(obs_norm, np.float32))[None]
            act = self.policy.sample_normalized(o, torch.as_tensor(np.asarray(w, np.float32)).view(
                1, pc.chunk_len, pc.action_dim))
        self.na.buf.add(obs=obs_norm, next_obs=next_obs_norm, act=act.numpy().ravel(), rew=reward,
                        done=float(terminated))
        self.latent_steps += 1

    def update(self, n: int) -> None:
        if self.na.buf.size < self.cfg.batch_size:
            return
        for _ in range(n):
            losses = self.na.update()
            self.updates += 1
            if self.updates % 100 == 1:
                self.run.log(self.env_steps(), losses)

    def actor(self) -> LatentActor:
        return self.na.deterministic_actor()

    def state(self) -> tuple[dict, dict]:
        state, meta = self.na.state()
        return state, {**meta, "latent_steps": self.latent_steps, "updates": self.updates}

    def load(self, state: dict, meta: dict) -> None:
        self.na.load(state, meta)
        self.latent_steps, self.updates = int(meta["latent_steps"]), int(meta["updates"])
