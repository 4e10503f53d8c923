"""One BC baseline: evaluation, the gate's baseline, the safe-set fallback and the ONNX runtime draw the same noise."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import steer.sim  # noqa: F401
from steer.agent.bc import base_policy_fn, save_policy
from steer.agent.conservative import ConservativeConfig
from steer.agent.dsrl import DSRLConfig, DSRLConfigError, LatentNoiseEnv, train_dsrl
from steer.agent.dsrl.core import ChunkGate
from steer.agent.export import export_run
from steer.agent.runlog import MemoryLog
from steer.robot.spec import DEFAULT_LATENT_NOISE_BOUND, PolicySpec

TASK = "steer/PlanarPush-v0"
SEED = 7
N = 5


@pytest.fixture(scope="module")
def exported(tiny_bc, tmp_path_factory):
    """(policy, path of the BC run exported to ONNX, observations of N fresh episodes)."""
    policy, _ = tiny_bc
    run = tmp_path_factory.mktemp("bc_run")
    save_policy(run / "checkpoints", policy, {"task": TASK, "control_rate_hz": 20.0})
    out = run / "policy.onnx"
    export_run(run, out)
    env = gym.make(TASK)
    obs = np.stack([env.reset(seed=s)[0] for s in range(N)]).astype(np.float32)
    return policy, out, obs


def test_the_seed_draws_noise_beyond_the_bound():
    # Otherwise clipped and unclipped noise would agree and the test below could not tell them apart.
    z = np.random.default_rng(SEED).standard_normal((N, 8))
    assert np.abs(z).max() > DEFAULT_LATENT_NOISE_BOUND


def test_evaluation_gate_baseline_fallback_and_onnx_runtime_give_the_same_chunks(exported):
    from steer.robot.onnx_policy import OnnxPolicy

    policy, path, obs = exported
    reference = base_policy_fn(policy, SEED)(obs)  # what `steer bc` evaluates, [N, H, A]
    assert reference.shape == (N, 4, 2)

    # The gate's baseline: a fresh gate runs every env's first chunk with the baseline.
    gate = ChunkGate(DSRLConfig(num_envs=N, conservative=ConservativeConfig(variant="epsmix")), policy)
    w = gate.latents(np.full((N, 8), 9.0, np.float32), lambda: pytest.fail("no explorer chunk expected"),
                     np.random.default_rng(SEED))
    with torch.no_grad():
        gate_chunks = policy.sample(torch.from_numpy(obs), torch.from_numpy(w.reshape(N, 4, 2))).numpy()
    np.testing.assert_allclose(gate_chunks, reference, atol=1e-5)

    # The safe-set fallback: a safe set that refuses everything runs the baseline's chunk.
    env = LatentNoiseEnv(gym.make(TASK), policy, 1.5, safe_set=lambda o, c: False, fallback_seed=SEED)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(8, np.float32))
    assert info["latent_fallback"]
    np.testing.assert_allclose(info["executed_actions"], reference[0][: info["chunk_steps"]], atol=1e-5)

    # The robot runtime, one observation per query, with the same seed.
    runtime = OnnxPolicy(path, seed=SEED)
    assert runtime.spec.latent_noise_bound == policy.cfg.latent_noise_bound == DEFAULT_LATENT_NOISE_BOUND
    np.testing.assert_allclose(np.stack([runtime(o) for o in obs]), reference, atol=1e-5)

    # Unclipped noise would give other chunks: the comparison above can fail.
    z = np.random.default_rng(SEED).standard_normal((N, 4, 2)).astype(np.float32)
    with torch.no_grad():
        unclipped = policy.sample(torch.from_numpy(obs), torch.from_numpy(z)).numpy()
    assert np.abs(unclipped - reference).max() > 1e-3


def test_the_bound_travels_with_the_policy_into_the_onnx_spec(exported):
    import onnx

    from steer.agent.export import SPEC_KEY

    _, path, _ = exported
    text = {p.key: p.value for p in onnx.load(str(path)).metadata_props}[SPEC_KEY]
    d = json.loads(text)
    assert d["latent_noise_bound"] == DEFAULT_LATENT_NOISE_BOUND
    d["latent_noise_bound"] = 0.5
    assert PolicySpec.from_json(json.dumps(d)).latent_noise_bound == 0.5
    del d["latent_noise_bound"]  # files exported before the key existed
    assert PolicySpec.from_json(json.dumps(d)).latent_noise_bound == DEFAULT_LATENT_NOISE_BOUND


def test_dsrl_refuses_a_box_smaller_than_the_baselines_noise(tiny_bc):
    policy, _ = tiny_bc
    with pytest.raises(DSRLConfigError, match="below the BC policy's 1.5") as err:
        train_dsrl(policy, TASK, DSRLConfig(latent_noise_bound=1.0), MemoryLog(), progress=False)
    assert err.value.user_facing


def test_bc_refuses_a_bound_that_is_not_positive_before_training():
    from steer.agent.bc import BCConfig

    with pytest.raises(ValueError, match="must be positive"):
        BCConfig(latent_noise_bound=0.0)
    assert BCConfig(latent_noise_bound=2.0).latent_noise_bound == 2.0
