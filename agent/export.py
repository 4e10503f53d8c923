"""Export trained policies to one ONNX file that carries everything a robot needs.

* BC diffusion policy: inputs ``obs`` [B, obs_dim] and ``noise`` [B, H, A]; the
  runtime draws N(0, I) noise itself when its caller gives none.
* DSRL policy: input ``obs`` only. The graph is the latent actor's deterministic mean
  composed with the unrolled DDIM sampler and the action unnormalization.
* PPO driving policy: output ``action`` [B, 2] = [steer, accel] in [-1, 1], the Beta
  mean (the value head and its value-only inputs stay behind). Inputs: with the vector
  observation, one float input ``obs`` [B, obs_dim], the env's flat observation keys
  concatenated in the order of the spec's ``obs_keys`` (``obs_names`` names every
  entry); with the BEV, ``bev`` (uint8 [B, C, H, W], as the simulator renders it) and
  ``measurements`` [B, M].

Output ``action`` is float32 [B, H, A] in the task's units. Normalization is baked
into the graph; ``metadata_props["steer.spec"]`` holds the JSON spec (names and order
of observations and actions, normalization, control rate, limits, chunk length,
sha256 of the weights, source run) that ``steer.robot`` checks before it runs it.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from steer.agent.checkpoint import CheckpointError, load_checkpoint, read_meta, sha256_file
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.latent_actor import LatentActor, load_dsrl_policy

OPSET = 17
SPEC_KEY = "steer.spec"
SPEC_FORMAT = "steer.policy/1"


class ExportError(ValueError):
    """A run that cannot be exported as asked."""

    user_facing = True


class _BCGraph(nn.Module):
    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample(obs, noise)


class _DSRLGraph(nn.Module):
    def __init__(self, actor: LatentActor, policy: DiffusionPolicy):
        super().__init__()
        self.actor, self.policy = actor, policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        on = self.policy.obs_norm.normalize(obs)
        w = self.actor(on).reshape(obs.shape[0], self.policy.cfg.chunk_len, self.policy.cfg.action_dim)
        return self.policy.act_norm.unnormalize(self.policy.sample_normalized(on, w))


def _spec(kind: str, policy: DiffusionPolicy, meta: dict[str, Any], weights_sha256: str, source_run: str) -> dict:
    cfg = policy.cfg
    obs_names = list(meta.get("obs_names") or [f"obs{i}" for i in range(cfg.obs_dim)])
    action_names = list(meta.get("action_names") or [f"action{i}" for i in range(cfg.action_dim)])
    low = meta.get("action_low") or policy.act_norm.low.tolist()
    high = meta.get("action_high") or policy.act_norm.high.tolist()
    return {
        "format": SPEC_FORMAT, "kind": kind, "task": meta.get("task", ""),
        "obs_names": obs_names, "action_names": action_names, "obs_dim": cfg.obs_dim, "action_dim": cfg.action_dim,
        "chunk_len": cfg.chunk_len, "noise_input": kind == "bc_diffusion",
        "control_rate_hz": float(meta.get("control_rate_hz", 0.0)),
        "action_low": [float(x) for x in low], "action_high": [float(x) for x in high],
        "normalization": {"obs_min": policy.obs_norm.low.tolist(), "obs_max": policy.obs_norm.high.tolist(),
                          "action_min": policy.act_norm.low.tolist(), "action_max": policy.act_norm.high.tolist()},
        "weights_sha256": weights_sha256, "source_run": source_run,
    }


def _to_onnx(module: nn.Module, args: tuple, input_names: list[str], spec: dict) -> bytes:
    import onnx

    dynamic = {n: {0: "batch"} for n in [*input_names, "action"]}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about constant shapes in the unrolled sampler
        torch.onnx.export(module.eval(), args, buf, input_names=input_names, output_names=["action"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec)
    model.producer_name = "steer"
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _PPOGraph(nn.Module):
    """BEV policy: (bev, measurements) -> Beta-mean action."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, bev: torch.Tensor, measurements: torch.Tensor) -> torch.Tensor:
        return _beta_mean_action(self.model, {"bev": bev, "measurements": measurements})


class _PPOVectorGraph(nn.Module):
    """Vector policy: one flat ``obs`` (the flat keys concatenated) -> Beta-mean action."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.widths = [model.shapes[k][0] for k in model.flat_keys]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return _beta_mean_action(self.model, dict(zip(self.model.flat_keys, obs.split(self.widths, dim=-1))))


def _beta_mean_action(model: nn.Module, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    from steer.agent.ppo_nets import beta_mean

    alpha, beta = model.distribution(model.features(obs))
    return 2.0 * beta_mean(alpha, beta) - 1.0


def ppo_flat_obs(model: nn.Module, obs: dict[str, np.ndarray]) -> np.ndarray:
    """The exported vector policy's ``obs`` input from a driving-env observation (keys in ``obs_keys`` order)."""
    return np.concatenate([np.asarray(obs[k], np.float32) for k in model.flat_keys], axis=-1)


def _ppo_checkpoint(ckpt: Path) -> bool:
    return (ckpt / "last.safetensors").exists() and "ppo_config" in read_meta(ckpt, "last")


def _ppo_spec(model: nn.Module, meta: dict[str, Any], weights_sha256: str, source_run: str) -> dict:
    fields = meta.get("obs_fields", {})
    keys = list(model.flat_keys)
    names = [n for k in keys for n in fields.get(k, [f"{k}{i}" for i in range(model.shapes[k][0])])]
    spec = {
        "format": SPEC_FORMAT, "kind": "ppo", "task": meta["ppo_config"].get("env_id", "steer/Drive-v0"),
        "obs_names": names, "obs_keys": keys,
        "action_names": ["steer", "accel"], "obs_dim": len(names), "action_dim": 2, "chunk_len": 1,
        "noise_input": False, "control_rate_hz": float(meta["control_rate_hz"]),
        "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
        "normalization": {}, "weights_sha256": weights_sha256, "source_run": source_run,
    }
    if "bev" in model.shapes:
        spec.update(bev_shape=list(model.shapes["bev"]), bev_channels=list(fields.get("bev", [])))
    return spec


def export_run(run: Path, out: Path) -> dict:
    """Export the policy of a BC, DSRL or PPO run directory to ``out``; returns the spec written."""
    from steer.agent.bc import load_policy
    from steer.agent.checkpoint import atomic_write_bytes

    run = Path(run)
    ckpt = run / "checkpoints"
    if (ckpt / "dsrl_policy.safetensors").exists():
        actor, policy, meta = load_dsrl_policy(ckpt)
        spec = _spec("dsrl", policy, meta, sha256_file(ckpt / "dsrl_policy.safetensors"), str(run))
        blob = _to_onnx(_DSRLGraph(actor, policy), (torch.zeros(1, policy.cfg.obs_dim),), ["obs"], spec)
    elif (ckpt / "policy.safetensors").exists():
        policy = load_policy(ckpt)
        _, meta = load_checkpoint(ckpt, "policy")
        spec = _spec("bc_diffusion", policy, meta, sha256_file(ckpt / "policy.safetensors"), str(run))
        args = (torch.zeros(1, policy.cfg.obs_dim), torch.zeros(1, policy.cfg.chunk_len, policy.cfg.action_dim))
        blob = _to_onnx(_BCGraph(policy), args, ["obs", "noise"], spec)
    elif _ppo_checkpoint(ckpt):
        from steer.agent.ppo import load_policy as load_ppo

        model, _, meta = load_ppo(ckpt)
        spec = _ppo_spec(model, meta, sha256_file(ckpt / "last.safetensors"), str(run))
        if "bev" in model.shapes:
            args = (torch.zeros(1, *model.shapes["bev"], dtype=torch.uint8), torch.zeros(1, spec["obs_dim"]))
            blob = _to_onnx(_PPOGraph(model), args, ["bev", "measurements"], spec)
        else:
            blob = _to_onnx(_PPOVectorGraph(model), (torch.zeros(1, spec["obs_dim"]),), ["obs"], spec)
    else:
        raise ExportError(f"{run} holds no policy to export (no checkpoints/policy, dsrl_policy "
                          f"or PPO last checkpoint).")
    atomic_write_bytes(Path(out), blob)
    return spec


def torch_policy(run: Path):
    """The torch function an export of ``run`` must match: ``f(obs[, noise]) -> action``."""
    from steer.agent.bc import load_policy

    ckpt = Path(run) / "checkpoints"
    if (ckpt / "dsrl_policy.safetensors").exists():
        actor, policy, _ = load_dsrl_policy(ckpt)
        return _DSRLGraph(actor, policy).eval(), policy
    if (ckpt / "policy.safetensors").exists():
        policy = load_policy(ckpt)
        return _BCGraph(policy).eval(), policy
    if _ppo_checkpoint(ckpt):
        from steer.agent.ppo import load_policy as load_ppo

        model, _, meta = load_ppo(ckpt)
        return (_PPOGraph(model) if "bev" in model.shapes else _PPOVectorGraph(model)).eval(), meta
    raise CheckpointError(f"{run} holds no policy.")


def parity(run: Path, onnx_path: Path, samples: int = 1000, seed: int = 0) -> float:
    """Max |torch − onnxruntime| over ``samples`` random observations (and noises) in the data range ± 20 %."""
    import onnxruntime as ort

    graph, policy = torch_policy(run)
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if isinstance(graph, _PPOVectorGraph):
        obs = rng.uniform(-1.5, 1.5, (samples, sess.get_inputs()[0].shape[1])).astype(np.float32)
        with torch.no_grad():
            ref = graph(torch.from_numpy(obs)).numpy()
        return float(np.max(np.abs(ref - sess.run(["action"], {"obs": obs})[0])))
    if isinstance(graph, _PPOGraph):
        c, h, w = graph.model.shapes["bev"]
        bev = rng.integers(0, 256, (min(samples, 200), c, h, w), dtype=np.uint8)
        meas = rng.uniform(-1, 2, (len(bev), sess.get_inputs()[1].shape[1])).astype(np.float32)
        with torch.no_grad():
            ref = graph(torch.from_numpy(bev), torch.from_numpy(meas)).numpy()
        got = sess.run(["action"], {"bev": bev, "measurements": meas})[0]
        return float(np.max(np.abs(ref - got)))
    low, high = policy.obs_norm.low.numpy(), policy.obs_norm.high.numpy()
    span = np.maximum(high - low, 1e-3)
    obs = rng.uniform(low - 0.2 * span, high + 0.2 * span, size=(samples, len(low))).astype(np.float32)
    feeds = {"obs": obs}
    args = [torch.from_numpy(obs)]
    if any(i.name == "noise" for i in sess.get_inputs()):
        noise = rng.standard_normal((samples, policy.cfg.chunk_len, policy.cfg.action_dim)).astype(np.float32)
        feeds["noise"] = noise
        args.append(torch.from_numpy(noise))
    with torch.no_grad():
        ref = graph(*args).numpy()
    got = sess.run(["action"], feeds)[0]
    return float(np.max(np.abs(ref - got)))


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's tensors in key order (independent of file layout)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
