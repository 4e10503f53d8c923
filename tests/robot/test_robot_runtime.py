"""The ONNX runtime: spec and shape checks, one-sentence refusals, open-loop chunks; robot/ stays torch-free."""

import json
import subprocess
import sys

import numpy as np
import pytest

from steer.robot.config import load_robot_config
from steer.robot.errors import PolicyRefused
from steer.robot.onnx_policy import ChunkExecutor, OnnxPolicy

ROBOT = load_robot_config()


def _refusal(path, robot=ROBOT):
    with pytest.raises(PolicyRefused) as err:
        OnnxPolicy(path, robot=robot)
    text = str(err.value)
    assert getattr(err.value, "user_facing", False)
    assert "\n" not in text and "Traceback" not in text and text.endswith((".", ")"))
    return text


def test_valid_policy_runs_and_chunks_open_loop(policy_factory):
    gain = np.zeros((2, 10))
    gain[0, 8] = 1.0  # action x = goal x
    policy = OnnxPolicy(policy_factory(gain=gain, bias=[0.0, -0.1], chunk_len=3), robot=ROBOT)
    assert policy.spec.kind == "dsrl" and policy.chunk_len == 3
    obs = np.zeros(10)
    obs[8] = 0.2
    assert np.allclose(policy(obs), [[0.2, -0.1]] * 3)
    executor = ChunkExecutor(policy)
    actions = []
    for k in range(7):
        obs[8] = 0.01 * k  # the observation changes every tick; the chunk only at its boundary
        actions.append(executor.act(obs)[0])
    assert np.allclose(actions, [0.0, 0.0, 0.0, 0.03, 0.03, 0.03, 0.06]) and executor.queries == 3
    executor.reset()
    assert executor.at_boundary


def test_noise_input_and_ppo(policy_factory):
    diffusion = OnnxPolicy(policy_factory(kind="bc_diffusion", noise_input=True), robot=ROBOT, seed=1)
    noise = np.ones((4, 2))
    assert np.allclose(diffusion(np.zeros(10), noise), 0.001)
    assert not np.allclose(diffusion(np.zeros(10)), 0.0)  # sampled noise when none is given
    ppo = OnnxPolicy(policy_factory(kind="ppo", bias=[0.1, 0.2]), robot=ROBOT)
    assert ppo.chunk_len == 1 and np.allclose(ppo(np.zeros(10)), [[0.1, 0.2]])


def test_action_order_follows_names(policy_factory):
    policy = OnnxPolicy(policy_factory(action_names=("pusher_y", "pusher_x"), bias=[0.1, 0.2]), robot=ROBOT)
    assert list(policy.command_order(ROBOT)) == [1, 0]


@pytest.mark.parametrize("kwargs, needle", [
    ({"spec": False}, "no 'steer.spec' metadata"),
    ({"spec": "{not json"}, "not valid JSON"),
    ({"spec_overrides": {"format": "steer.policy/0"}}, "expected 'steer.policy/1'"),
    ({"spec_overrides": {"kind": "sac"}}, "kind 'sac'"),
    ({"spec_overrides": {"obs_dim": 11}}, "10 obs_names for obs_dim 11"),
    ({"spec_overrides": {"action_low": [0.0]}}, "action_low/action_high"),
    ({"spec_overrides": {"control_rate_hz": 50.0}}, "trained at 50 Hz"),
    ({"spec_overrides": {"noise_input": True}}, "no 'noise' input"),
    ({"obs_names": ("pusher_x.pos",) * 9 + ("camera.z",)}, "['camera.z']"),
    ({"action_names": ("puck_x", "pusher_y")}, "commands ['puck_x', 'pusher_y']"),
    ({"obs_dim": 12, "spec_overrides": {"obs_dim": 10}}, "input 'obs' has shape"),
    ({"out_chunk": 5}, "output 'action'"),
    ({"output_name": "actions"}, "must output 'action'"),
    ({"opset": 13}, "opset 13"),
])
def test_mismatched_policy_is_refused_with_one_sentence(policy_factory, kwargs, needle):
    assert needle in _refusal(policy_factory(**kwargs))


def test_malformed_and_missing_files_are_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 20)
    assert "ONNX" in _refusal(junk)
    assert "does not exist" in _refusal(tmp_path / "missing.onnx")


def test_driving_policy_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["measurements"], ["action"])], "drive",
        [helper.make_tensor_value_info("bev", TensorProto.FLOAT, ["batch", 10, 256, 256]),
         helper.make_tensor_value_info("measurements", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = {"format": "steer.policy/1", "kind": "ppo", "obs_names": ["speed", "limit"],
            "action_names": ["steer", "accel"], "obs_dim": 2, "action_dim": 2, "chunk_len": 1, "control_rate_hz": 10.0, "action_low": [-1, -1],
            "action_high": [1, 1]}
    helper.set_model_props(model, {"steer.spec": json.dumps(spec)})
    onnx.save(model, str(tmp_path / "drive.onnx"))
    assert "driving policy" in _refusal(tmp_path / "drive.onnx")


def test_robot_package_imports_neither_torch_nor_training_code():
    code = (
        "import pkgutil, sys, importlib, steer.robot as r\n"
        "names = [m.name for m in pkgutil.iter_modules(r.__path__)]\n"
        "assert len(names) >= 10, names\n"
        "for n in names: importlib.import_module('steer.robot.' + n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rclpy', 'gymnasium', 'mujoco')\n"
        "             or m.startswith(('steer.agent', 'steer.ops', 'steer.sim', 'steer.driving')))\n"
        "print(len(names), bad)\n"
        "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_cli_refuses_a_missing_policy_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "steer.ops.cli", "robot", "run", "--policy",
                          str(tmp_path / "missing.onnx")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_sim_robot_refuses_a_config_that_does_not_fit_the_task():
    from robot_helpers import MemoryTransport
    from steer.robot.errors import RobotError
    from steer.robot.sim_robot import SimRobot

    with pytest.raises(RobotError, match="steps at 20 Hz"):
        SimRobot(ROBOT.replace(control_rate_hz=50.0), MemoryTransport())
    with pytest.raises(RobotError, match="does not fit task"):
        SimRobot(ROBOT.replace(joints=("pusher_x", "pusher_y", "wrist")), MemoryTransport())


def test_realtime_priority_is_applied_or_refused_with_a_warning():
    code = ("import os\nfrom steer.robot.processes import set_realtime_priority\n"
            "ok = set_realtime_priority(5)\n"
            "assert ok == (os.sched_getscheduler(0) == os.SCHED_FIFO), ok\n"
            "assert set_realtime_priority(0) is False\nprint(ok)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True" or "not available" in out.stderr
