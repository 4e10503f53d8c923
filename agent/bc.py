"""Behaviour cloning of a diffusion policy from demonstrations.

Each training sample is (observation at t, the next ``chunk_len`` actions), with the
episode's last action repeated past its end. Observation and action statistics for
min-max scaling come from the dataset and are stored with the weights. AdamW with a
cosine learning-rate schedule; the policy that is saved and used is the EMA of the
weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from steer.agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from steer.agent.diffusion import DiffusionConfig, DiffusionPolicy
from steer.agent.runlog import RunLog
from steer.robot.spec import DEFAULT_LATENT_NOISE_BOUND, base_noise


@dataclass(frozen=True)
class BCConfig:
    """Behaviour-cloning hyperparameters."""

    steps: int = field(default=6000, metadata={"range": "[1, inf)"})
    """Gradient steps."""
    batch_size: int = field(default=256, metadata={"range": "[1, inf)"})
    """Samples per gradient step."""
    lr: float = field(default=1e-3, metadata={"range": "(0, inf)"})
    """Peak learning rate of AdamW (cosine decay to 1 % of it)."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    ema_decay: float = field(default=0.995, metadata={"range": "[0, 1)"})
    """Decay of the exponential moving average of the weights (warmed up over the first steps)."""
    chunk_len: int = field(default=4, metadata={"range": "[1, inf)"})
    """Actions per chunk."""
    hidden_dim: int = field(default=256, metadata={"range": "[1, inf)"})
    """Width of the denoiser."""
    num_blocks: int = field(default=3, metadata={"range": "[1, inf)"})
    """Residual blocks of the denoiser."""
    train_diffusion_steps: int = field(default=20, metadata={"range": "[1, inf)"})
    """Diffusion steps T in training."""
    ddim_steps: int = field(default=5, metadata={"range": "[1, inf)"})
    """DDIM steps at sampling time."""
    latent_noise_bound: float = field(default=DEFAULT_LATENT_NOISE_BOUND, metadata={"range": "(0, inf)"})
    """The policy's initial noise is N(0, I) clipped to ±this; stored with the policy and its export."""
    seed: int = 0
    """Seed of weights init and minibatch sampling."""
    log_every: int = field(default=100, metadata={"range": "[1, inf)"})
    """Log the loss every this many steps."""
    checkpoint_every: int = field(default=1000, metadata={"range": "[1, inf)"})
    """Save a resumable checkpoint every this many steps."""

    def __post_init__(self) -> None:
        if not self.latent_noise_bound > 0:  # before training, not when the first noise is drawn
            raise ValueError(f"latent_noise_bound must be positive, got {self.latent_noise_bound}.")


def make_chunks(observations: list[np.ndarray], actions: list[np.ndarray], chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(obs [N, obs_dim], chunks [N, H, A]) from per-episode arrays; pads each episode's end with its last action."""
    obs_out, chunk_out = [], []
    for obs, act in zip(observations, actions):
        t_len = len(act)
        padded = np.concatenate([act, np.repeat(act[-1:], chunk_len - 1, axis=0)], axis=0)
        idx = np.arange(t_len)[:, None] + np.arange(chunk_len)[None, :]
        obs_out.append(obs[:t_len])
        chunk_out.append(padded[idx])
    return np.concatenate(obs_out).astype(np.float32), np.concatenate(chunk_out).astype(np.float32)


def build_policy(cfg: BCConfig, obs: np.ndarray, chunks: np.ndarray) -> DiffusionPolicy:
    dcfg = DiffusionConfig(obs_dim=obs.shape[1], action_dim=chunks.shape[2], chunk_len=cfg.chunk_len,
                           hidden_dim=cfg.hidden_dim, num_blocks=cfg.num_blocks,
                           train_steps=cfg.train_diffusion_steps, ddim_steps=cfg.ddim_steps,
                           latent_noise_bound=cfg.latent_noise_bound)
    acts = chunks.reshape(-1, chunks.shape[2])
    return DiffusionPolicy(dcfg, torch.from_numpy(obs.min(0)), torch.from_numpy(obs.max(0)),
                           torch.from_numpy(acts.min(0)), torch.from_numpy(acts.max(0)))


def base_latents(policy: DiffusionPolicy, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` initial noises [n, noise_dim] of the BC policy: :func:`~steer.robot.spec.base_noise` at its bound."""
    return base_noise(rng, (n, policy.cfg.noise_dim), policy.cfg.latent_noise_bound)


def base_policy_fn(policy: DiffusionPolicy, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The BC policy as a chunk policy, obs [B, obs_dim] → chunks [B, H, A], its noise from a seeded generator.

    Batch rows draw in order, so B observations at once get the same chunks as B calls of one each
    (as the robot runtime makes them).
    """
    rng = np.random.default_rng(seed)
    shape = (policy.cfg.chunk_len, policy.cfg.action_dim)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)
            w = torch.from_numpy(base_latents(policy, rng, o.shape[0]).reshape(o.shape[0], *shape))
            return policy.sample(o, w).numpy()

    return act


def policy_from_state(state: dict[str, Any], meta: dict[str, Any]) -> DiffusionPolicy:
    dcfg = DiffusionConfig(**meta["diffusion"])
    w = state["weights"]
    policy = DiffusionPolicy(dcfg, w["obs_norm.low"], w["obs_norm.high"], w["act_norm.low"], w["act_norm.high"])
    policy.load_state_dict(w)
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)
    return policy


def save_policy(directory: Path, policy: DiffusionPolicy, meta: dict[str, Any], name: str = "policy") -> Path:
    """Save the weights a robot or DSRL needs (EMA weights and normalizer) with their config."""
    full_meta = {"kind": "bc_diffusion", "diffusion": asdict(policy.cfg), **meta}
    return save_checkpoint(directory, name, {"weights": policy.state_dict()}, full_meta)


def load_policy(directory: Path, name: str = "policy") -> tuple[DiffusionPolicy, dict[str, Any]]:
    """Load a frozen diffusion policy saved by :func:`save_policy`."""
    state, meta = load_checkpoint(directory, name)
    if meta.get("kind") != "bc_diffusion":
        raise CheckpointError(f"{directory}/{name} holds a {meta.get('kind')!r} checkpoint, not a BC diffusion policy.")
    return policy_from_state(state, meta)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)


def train_bc(observations: list[np.ndarray], actions: list[np.ndarray], cfg: BCConfig, run: RunLog,
             policy_meta: dict[str, Any], resume: bool = False, progress: bool = True) -> DiffusionPolicy:
    """Train a diffusion policy by BC; checkpoints go to ``run.checkpoint_dir``; returns the EMA policy."""
    torch.manual_seed(cfg.seed)
    obs, chunks = make_chunks(observations, actions, cfg.chunk_len)
    model = build_policy(cfg, obs, chunks)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.01)
    rng = np.random.default_rng(cfg.seed)
    start = 0
    ckpt_dir = Path(run.checkpoint_dir)
    if resume and (ckpt_dir / "trainer.safetensors").exists():
        state, meta = load_checkpoint(ckpt_dir, "trainer")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = meta["numpy_rng"]
        start = int(meta["step"])
        run.rewind(start)
    obs_t, chunks_t = torch.from_numpy(obs), torch.from_numpy(chunks)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="bc", unit="step", disable=not progress)
    t0, running = time.time(), 0.0
    for step in bar:
        idx = torch.from_numpy(rng.integers(0, len(obs), cfg.batch_size))
        loss = model.loss(obs_t[idx], chunks_t[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        _ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        running += loss.item()
        done = step + 1
        if done % cfg.log_every == 0:
            run.log(done, {"losses/diffusion": running / cfg.log_every, "charts/lr": sched.get_last_lr()[0],
                           "charts/SPS": (done - start) / max(time.time() - t0, 1e-9)})
            bar.set_postfix(loss=f"{running / cfg.log_every:.4f}")
            running = 0.0
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_policy(ckpt_dir, ema, policy_meta)
            save_checkpoint(ckpt_dir, "trainer",
                            {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state()},
                            {"step": done, "numpy_rng": rng.bit_generator.state})
    bar.close()
    ema.eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema
