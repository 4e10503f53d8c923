"""Export trained policies to one ONNX file that carries everything a robot needs.

* BC diffusion policy: inputs ``obs`` [B, obs_dim] and ``noise`` [B, H, A]; the
  runtime draws the BC baseline's noise itself (:func:`steer.robot.spec.base_noise` at the
  spec's ``latent_noise_bound``) when its caller gives none.
* DSRL policy: input ``obs`` only. The graph is the latent actor's deterministic mean
  composed with the unrolled DDIM sampler and the action unnormalization.
* PPO driving policy: output ``action`` [B, 2] = [steer, accel] in [-1, 1], the Beta
  mean (the value head and its value-only inputs stay behind). Inputs: with the vector
  observation, one float input ``obs`` [B, obs_dim], the env's flat observation keys
  concatenated in the order of the spec's ``obs_keys`` (``obs_names`` names every
  entry); with the BEV, ``bev`` (uint8 [B, C, H, W], as the simulator renders it) and
  ``measurements`` [B, M].

Output ``action`` is float32 [B, H, A] in the task's units. Normalization is baked
into the graph; ``metadata_props[SPEC_KEY]`` holds the :class:`~steer.robot.spec.PolicySpec`
(names and order of observations and actions, normalization, control rate, limits, chunk
length, sha256 of the weights, source run) that ``steer.robot`` checks before it runs it.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from steer.agent.checkpoint import CheckpointError, load_checkpoint
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.latent_actor import LatentActor, load_dsrl_policy
from steer.agent.runlog import policy_kind
from steer.robot.spec import SPEC_KEY, PolicySpec, graph_sha256

OPSET = 17


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


def _spec(kind: str, policy: DiffusionPolicy, meta: dict[str, Any], weights_sha256: str, source_run: str) -> PolicySpec:
    cfg = policy.cfg
    obs_names = meta.get("obs_names") or [f"obs{i}" for i in range(cfg.obs_dim)]
    action_names = meta.get("action_names") or [f"action{i}" for i in range(cfg.action_dim)]
    low = meta.get("action_low") or policy.act_norm.low.tolist()
    high = meta.get("action_high") or policy.act_norm.high.tolist()
    return PolicySpec(
        kind=kind, task=meta.get("task", ""), obs_names=tuple(obs_names), action_names=tuple(action_names),
        obs_dim=cfg.obs_dim, action_dim=cfg.action_dim, chunk_len=cfg.chunk_len, noise_input=kind == "bc_diffusion",
        control_rate_hz=float(meta.get("control_rate_hz", 0.0)),
        action_low=tuple(float(x) for x in low), action_high=tuple(float(x) for x in high),
        normalization={"obs_min": policy.obs_norm.low.tolist(), "obs_max": policy.obs_norm.high.tolist(),
                       "action_min": policy.act_norm.low.tolist(), "action_max": policy.act_norm.high.tolist()},
        weights_sha256=weights_sha256, source_run=source_run,
        latent_noise_bound=cfg.latent_noise_bound)  # the BC policy's own bound, stored with its weights


def _to_onnx(module: nn.Module, args: tuple, input_names: list[str], spec: PolicySpec) -> tuple[bytes, PolicySpec]:
    """The ONNX bytes and the spec they carry (with the graph's weights hash)."""
    import onnx

    dynamic = {n: {0: "batch"} for n in [*input_names, "action"]}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about constant shapes in the unrolled sampler
        torch.onnx.export(module.eval(), args, buf, input_names=input_names, output_names=["action"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name = "steer"
    # The spec's weights hash is the graph as stored in this file, so a robot recomputes it from the
    # file alone (steer.robot.spec.graph_sha256); the metadata added next leaves the graph's bytes alone.
    spec = dataclasses.replace(spec, weights_sha256=graph_sha256(model.SerializeToString()))
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    onnx.checker.check_model(model)
    blob = model.SerializeToString()
    if graph_sha256(blob) != spec.weights_sha256:
        raise ExportError("the exported graph changed while its spec was written; export it again.")
    return blob, spec


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


def _ppo_spec(model: nn.Module, meta: dict[str, Any], weights_sha256: str, source_run: str) -> PolicySpec:
    # One policy step is one step of the simulator the run trained in (its env's control rate, from dt).
    fields = meta.get("obs_fields", {})
    keys = tuple(model.flat_keys)
    names = tuple(n for k in keys for n in fields.get(k, [f"{k}{i}" for i in range(model.shapes[k][0])]))
    bev = "bev" in model.shapes
    return PolicySpec(
        kind="ppo", task=meta["ppo_config"].get("env_id", "steer/Drive-v0"), obs_names=names, obs_keys=keys,
        action_names=("steer", "accel"), obs_dim=len(names), action_dim=2, chunk_len=1, noise_input=False,
        control_rate_hz=float(meta["control_rate_hz"]), action_low=(-1.0, -1.0), action_high=(1.0, 1.0),
        bev_shape=tuple(model.shapes["bev"]) if bev else (), bev_channels=tuple(fields.get("bev", [])) if bev else (),
        weights_sha256=weights_sha256, source_run=source_run)


def export_run(run: Path, out: Path) -> PolicySpec:
    """Export the policy of a BC, DSRL or PPO run directory to ``out``; returns the spec written."""
    from steer.agent.bc import load_policy
    from steer.agent.runlog import atomic_write_bytes

    run = Path(run)
    ckpt = run / "checkpoints"
    kind = policy_kind(run)
    if kind == "dsrl":
        actor, policy, meta = load_dsrl_policy(ckpt)
        spec = _spec("dsrl", policy, meta, "", str(run))
        blob, spec = _to_onnx(_DSRLGraph(actor, policy), (torch.zeros(1, policy.cfg.obs_dim),), ["obs"], spec)
    elif kind == "bc":
        policy = load_policy(ckpt)
        _, meta = load_checkpoint(ckpt, "policy")
        spec = _spec("bc_diffusion", policy, meta, "", str(run))
        args = (torch.zeros(1, policy.cfg.obs_dim), torch.zeros(1, policy.cfg.chunk_len, policy.cfg.action_dim))
        blob, spec = _to_onnx(_BCGraph(policy), args, ["obs", "noise"], spec)
    elif kind == "ppo":
        from steer.agent.ppo import load_policy as load_ppo

        model, _, meta = load_ppo(ckpt)
        spec = _ppo_spec(model, meta, "", str(run))
        if "bev" in model.shapes:
            args = (torch.zeros(1, *model.shapes["bev"], dtype=torch.uint8), torch.zeros(1, spec.obs_dim))
            blob, spec = _to_onnx(_PPOGraph(model), args, ["bev", "measurements"], spec)
        else:
            blob, spec = _to_onnx(_PPOVectorGraph(model), (torch.zeros(1, spec.obs_dim),), ["obs"], spec)
    else:
        raise ExportError(f"{run} holds no policy to export (no checkpoints/policy, dsrl_policy "
                          f"or PPO last checkpoint).")
    atomic_write_bytes(Path(out), blob)
    return spec


def torch_policy(run: Path):
    """The torch function an export of ``run`` must match: ``f(obs[, noise]) -> action``."""
    from steer.agent.bc import load_policy

    ckpt = Path(run) / "checkpoints"
    kind = policy_kind(run)
    if kind == "dsrl":
        actor, policy, _ = load_dsrl_policy(ckpt)
        return _DSRLGraph(actor, policy).eval(), policy
    if kind == "bc":
        policy = load_policy(ckpt)
        return _BCGraph(policy).eval(), policy
    if kind == "ppo":
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

