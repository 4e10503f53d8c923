import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from steer.agent.export import ExportError, export_run, parity, torch_policy
from steer.robot.spec import SPEC_KEY


@pytest.fixture(scope="module")
def runs(tiny_bc, tmp_path_factory):
    """A BC run directory and a DSRL run directory built on it."""
    import steer.sim  # noqa: F401
    from steer.agent.dsrl import DSRLConfig, train_dsrl
    from steer.agent.runlog import MemoryLog

    policy, ckpt = tiny_bc
    root = tmp_path_factory.mktemp("runs")
    bc = root / "bc"
    (bc / "checkpoints").mkdir(parents=True)
    for f in ckpt.glob("policy.*"):
        (bc / "checkpoints" / f.name).write_bytes(f.read_bytes())
    dsrl = root / "dsrl"
    meta = {"task": "steer/PlanarPush-v0", "obs_names": [f"o{i}" for i in range(10)], "action_names": ["x", "y"],
            "control_rate_hz": 20.0, "action_low": [-0.3, -0.3], "action_high": [0.3, 0.3]}
    train_dsrl(policy, "steer/PlanarPush-v0", DSRLConfig(env_steps=200, warmup_env_steps=100, eval_every=10**6),
               MemoryLog(dsrl / "checkpoints"), progress=False, policy_meta=meta)
    return bc, dsrl


@pytest.mark.parametrize("kind", ["bc", "dsrl"])
def test_onnx_matches_torch_on_1000_observations(runs, kind, tmp_path):
    run = runs[0] if kind == "bc" else runs[1]
    out = tmp_path / "p.onnx"
    spec = export_run(run, out)
    assert parity(run, out, samples=1000) <= 1e-5
    model = onnx.load(str(out))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs = [i.name for i in model.graph.input]
    assert inputs == (["obs", "noise"] if kind == "bc" else ["obs"])
    assert [o.name for o in model.graph.output] == ["action"]
    assert {p.key: p.value for p in model.metadata_props}[SPEC_KEY] == spec.to_json()
    stored = spec
    assert stored.kind == ("bc_diffusion" if kind == "bc" else "dsrl")
    assert stored.chunk_len == 4 and stored.obs_dim == 10 and stored.action_dim == 2
    assert len(stored.weights_sha256) == 64 and stored.source_run == str(run)
    # The robot recomputes the weights hash from the file alone, without onnx: it is the stored graph's.
    import hashlib

    from steer.robot.spec import graph_sha256
    assert graph_sha256(out.read_bytes()) == stored.weights_sha256
    assert stored.weights_sha256 == hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def test_exported_dsrl_policy_runs_in_the_robot_runtime(runs, tmp_path):
    from steer.robot.onnx_policy import OnnxPolicy

    _, dsrl = runs
    out = tmp_path / "p.onnx"
    export_run(dsrl, out)
    rt = OnnxPolicy(out)
    graph, _ = torch_policy(dsrl)
    obs = np.linspace(-0.1, 0.1, 10).astype(np.float32)
    with torch.no_grad():
        ref = graph(torch.from_numpy(obs)[None]).numpy()[0]
    np.testing.assert_allclose(rt(obs), ref, atol=1e-5)
    assert rt.spec.chunk_len == 4 and rt.spec.control_rate_hz == 20.0


def test_the_spec_export_writes_is_what_runtime_and_console_read(runs, tmp_path):
    from steer.ops.console.policies import read_spec
    from steer.robot.onnx_policy import OnnxPolicy
    from steer.robot.spec import DEFAULT_LATENT_NOISE_BOUND

    _, dsrl = runs
    out = tmp_path / "p.onnx"
    written = export_run(dsrl, out)
    console, error = read_spec(out)
    assert error == "" and OnnxPolicy(out).spec == written == console
    assert written.obs_names == tuple(f"o{i}" for i in range(10)) and written.action_low == (-0.3, -0.3)
    assert written.latent_noise_bound == DEFAULT_LATENT_NOISE_BOUND and written.normalization["obs_min"]


def test_export_refuses_a_folder_without_a_policy(tmp_path):
    with pytest.raises(ExportError, match="no policy to export"):
        export_run(tmp_path, tmp_path / "x.onnx")
    proc = subprocess.run([sys.executable, "-m", "steer.ops.cli", "export", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not a run directory" in proc.stderr


def test_ppo_driving_policy_exports_with_bev_and_measurement_inputs(tmp_path):

    from steer.agent.checkpoint import save_checkpoint
    from steer.agent.ppo import make_model, policy_meta
    from steer.agent.ppo_config import PPOConfig
    from steer.driving import DriveVectorEnv

    from steer.driving import DriveEnvConfig, SimConfig

    # A simulator step of 0.05 s (the default is 0.1 s): the spec's rate must come from it, not a constant.
    cfg = PPOConfig(env=DriveEnvConfig(sim=SimConfig(n_towns=1, routes_per_town=2, dt=0.05), obs="bev"))
    env = DriveVectorEnv(1, cfg.env)
    torch.manual_seed(0)
    model = make_model(env.single_observation_space, cfg.net)
    # Same layout the trainer writes (agent/ppo.py).
    save_checkpoint(tmp_path / "checkpoints", "last", {"model": model.state_dict()},
                    {"update": 1, "global_step": 1, **policy_meta(env, cfg)})
    spec = export_run(tmp_path, tmp_path / "drive.onnx")
    assert spec.kind == "ppo" and spec.chunk_len == 1 and spec.bev_shape == (8, 64, 64)
    assert spec.control_rate_hz == pytest.approx(20.0)
    assert parity(tmp_path, tmp_path / "drive.onnx") <= 1e-5
    m = onnx.load(str(tmp_path / "drive.onnx"))
    assert [i.name for i in m.graph.input] == ["bev", "measurements"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_onnx_file_gets_the_users_umask_not_0600(runs, tmp_path, umask):
    """A node running as another user (in the owner's group, say) must be able to read the file."""
    import os
    import stat

    old = os.umask(umask)
    try:
        out = tmp_path / "p.onnx"
        export_run(runs[1], out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["p.onnx"]  # no temporary file left behind


def test_vector_ppo_policy_exports_one_obs_input_and_drives_the_same_routes_as_torch(tmp_path):
    import dataclasses

    import onnxruntime as ort
    from ppo_worlds import tiny_ppo_config

    from steer.agent.checkpoint import save_checkpoint
    from steer.agent.export import ppo_flat_obs
    from steer.agent.ppo import make_model, obs_to_torch, policy_meta
    from steer.driving import DriveVectorEnv
    from steer.driving.evaluation import evaluate_routes

    cfg = tiny_ppo_config()
    env = DriveVectorEnv(1, cfg.env)
    torch.manual_seed(0)
    model = make_model(env.single_observation_space, cfg.net)
    # A policy head with large weights: actions vary strongly with the observation, so any mismatch in
    # input order or scaling sends the car elsewhere.
    torch.nn.init.normal_(model.policy_head.weight, std=0.3)
    with torch.no_grad():
        model.policy_head.bias.copy_(torch.tensor([0.0, 2.0, 0.0, 0.0]))  # α of the throttle up: it drives
    save_checkpoint(tmp_path / "checkpoints", "last", {"model": model.state_dict()},
                    {"update": 1, "global_step": 1, **policy_meta(env, cfg)})
    spec = export_run(tmp_path, tmp_path / "drive.onnx")
    fields = env.metadata["obs_fields"]
    assert spec.obs_keys == ("measurements", "vector")
    assert list(spec.obs_names) == fields["measurements"] + fields["vector"] and spec.obs_dim == len(spec.obs_names)
    assert spec.control_rate_hz == pytest.approx(10.0)
    assert [i.name for i in onnx.load(str(tmp_path / "drive.onnx")).graph.input] == ["obs"]
    assert parity(tmp_path, tmp_path / "drive.onnx") <= 1e-5
    # One thread each: their sums then run in a fixed order, so both drivers are deterministic (the
    # 1e-7 differences between them must not depend on scheduling).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(tmp_path / "drive.onnx"), opts, providers=["CPUExecutionProvider"])
    torch.set_num_threads(1)
    model.eval()

    def torch_act(obs):
        with torch.no_grad():
            return model.act(obs_to_torch(obs)).numpy()

    def onnx_act(obs):
        return sess.run(["action"], {"obs": ppo_flat_obs(model, obs)})[0]

    held = dataclasses.replace(cfg.env, sim=dataclasses.replace(cfg.env.sim, seed=11))
    a = evaluate_routes(torch_act, held, n_routes=12, batch=12)
    b = evaluate_routes(onnx_act, held, n_routes=12, batch=12)
    assert a["distance_m"].mean() > 5.0 and len(set(a["length"])) > 3  # the cars move, and end differently
    np.testing.assert_allclose(a["route_completion"], b["route_completion"], atol=1e-4)
    np.testing.assert_array_equal(a["length"], b["length"])
    for k in ("collision_vehicle", "off_road", "red_light", "route_deviation", "timeout", "blocked"):
        np.testing.assert_array_equal(a[k], b[k])
    # The robot-side runtime (numpy + onnxruntime only) loads it and gives the same action.
    from steer.robot.onnx_policy import OnnxPolicy

    obs, _ = env.reset(seed=2)
    got = OnnxPolicy(tmp_path / "drive.onnx")(ppo_flat_obs(model, obs)[0])
    np.testing.assert_allclose(got, torch_act(obs), atol=1e-5)
