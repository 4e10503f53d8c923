"""Diffusion policy over action chunks for low-dimensional state (as in DPPO).

A residual MLP denoiser predicts the noise ε in a noisy, normalized action chunk from
[noisy chunk, sinusoidal time embedding, normalized observation]. Training uses a
cosine β schedule with T steps; sampling is deterministic DDIM (η = 0) over a subset
of K steps with the initial noise passed in explicitly, so

    action_chunk = policy.sample(obs, noise)

is a pure function. DSRL relies on that: its latent actor chooses ``noise``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from steer.robot.spec import DEFAULT_LATENT_NOISE_BOUND


@dataclass(frozen=True)
class DiffusionConfig:
    """Shape and schedule of a diffusion policy."""

    obs_dim: int
    """Observation size."""
    action_dim: int
    """Action size per step."""
    chunk_len: int = 4
    """Actions predicted (and executed) per query."""
    hidden_dim: int = 256
    """Width of the residual MLP."""
    num_blocks: int = 3
    """Residual blocks (two linear layers each)."""
    time_embed_dim: int = 32
    """Size of the sinusoidal time embedding."""
    train_steps: int = 20
    """Diffusion steps T used in training."""
    ddim_steps: int = 5
    """Deterministic DDIM steps used for sampling (a subset of the T steps)."""
    clip_sample: float = 1.0
    """The predicted clean chunk x̂0 is clipped to ±clip_sample at every step."""
    latent_noise_bound: float = DEFAULT_LATENT_NOISE_BOUND
    """The BC policy's initial noise is N(0, I) clipped to ±this (see :func:`steer.robot.spec.base_noise`)."""

    @property
    def noise_dim(self) -> int:
        return self.chunk_len * self.action_dim


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0..steps-1 of the cosine schedule (Nichol & Dhariwal 2021), β clipped at 0.999."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


def ddim_timesteps(train_steps: int, ddim_steps: int) -> list[int]:
    """Evenly spaced DDIM timesteps, descending, ending at 0 (e.g. 20, 5 → [16, 12, 8, 4, 0])."""
    if not 1 <= ddim_steps <= train_steps:
        raise ValueError(f"ddim_steps must be in [1, {train_steps}], got {ddim_steps}")
    ratio = train_steps // ddim_steps
    return [i * ratio for i in range(ddim_steps)][::-1]


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of a scalar timestep."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1)),
                             persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Mish(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Denoiser(nn.Module):
    """ε-prediction network: (noisy chunk, t, obs) → ε̂ of the same shape as the chunk."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.time_embed = nn.Sequential(SinusoidalEmbedding(cfg.time_embed_dim),
                                        nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim * 2), nn.Mish(),
                                        nn.Linear(cfg.time_embed_dim * 2, cfg.time_embed_dim))
        in_dim = cfg.noise_dim + cfg.time_embed_dim + cfg.obs_dim
        self.inp = nn.Linear(in_dim, cfg.hidden_dim)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.hidden_dim) for _ in range(cfg.num_blocks)])
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden_dim), nn.Mish(), nn.Linear(cfg.hidden_dim, cfg.noise_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), self.time_embed(t), obs], dim=-1)
        return self.out(self.blocks(self.inp(h))).reshape(x.shape)


class MinMaxNormalizer(nn.Module):
    """Affine map of each feature from [min, max] to [-1, 1]; constant features map to 0."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        low, high = low.float(), high.float()
        span = high - low
        # A constant feature has no span; give it unit span so it maps to -1 + 0 = centre below.
        safe = torch.where(span > 1e-6, span, torch.ones_like(span))
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("scale", 2.0 / safe)
        self.register_buffer("offset", torch.where(span > 1e-6, -1.0 - low * 2.0 / safe, -low * 2.0 / safe))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset) / self.scale


class DiffusionPolicy(nn.Module):
    """Observation-conditioned diffusion policy over normalized action chunks."""

    def __init__(self, cfg: DiffusionConfig, obs_low: torch.Tensor, obs_high: torch.Tensor,
                 act_low: torch.Tensor, act_high: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.denoiser = Denoiser(cfg)
        self.obs_norm = MinMaxNormalizer(obs_low, obs_high)
        self.act_norm = MinMaxNormalizer(act_low, act_high)
        acp = cosine_alphas_cumprod(cfg.train_steps)
        self.register_buffer("alphas_cumprod", acp)
        ts = ddim_timesteps(cfg.train_steps, cfg.ddim_steps)
        prev = ts[1:] + [-1]
        self.register_buffer("ddim_t", torch.tensor(ts, dtype=torch.long), persistent=False)
        self.register_buffer("ddim_ab", acp[ts], persistent=False)
        self.register_buffer("ddim_ab_prev",
                             torch.stack([acp[p] if p >= 0 else torch.tensor(1.0) for p in prev]), persistent=False)

    # -- training ----------------------------------------------------------------
    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """ε-prediction MSE for unnormalized ``obs`` [B, obs_dim] and chunks ``actions`` [B, H, A]."""
        x0 = self.act_norm.normalize(actions)
        o = self.obs_norm.normalize(obs)
        t = torch.randint(0, self.cfg.train_steps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].view(-1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return torch.mean((self.denoiser(xt, t, o) - eps) ** 2)

    # -- sampling ----------------------------------------------------------------
    def sample_normalized(self, obs_norm: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM from ``noise`` [B, H, A] given a normalized observation; returns x̂0 in [-1, 1]."""
        x = noise
        c = self.cfg.clip_sample
        for k in range(self.cfg.ddim_steps):
            ab, ab_prev = self.ddim_ab[k], self.ddim_ab_prev[k]
            t = self.ddim_t[k].expand(x.shape[0])
            eps = self.denoiser(x, t, obs_norm)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-c, c)
            # Recompute ε from the clipped x̂0 so the update stays on the clipped estimate.
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x.clamp(-c, c)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Action chunk [B, H, A] (unnormalized) for ``obs`` [B, obs_dim] and initial ``noise`` [B, H, A]."""
        expected = (self.cfg.chunk_len, self.cfg.action_dim)
        if obs.ndim != 2 or obs.shape[1] != self.cfg.obs_dim:
            raise ValueError(f"obs must be [batch, {self.cfg.obs_dim}], got {tuple(obs.shape)}")
        if noise.shape[1:] != expected or noise.shape[0] != obs.shape[0]:
            raise ValueError(f"noise must be [{obs.shape[0]}, {expected[0]}, {expected[1]}], got {tuple(noise.shape)}")
        return self.act_norm.unnormalize(self.sample_normalized(self.obs_norm.normalize(obs), noise))

    def config_dict(self) -> dict:
        return asdict(self.cfg)
