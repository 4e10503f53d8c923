"""Helpers of the robot tests: small ONNX policies built with onnx.helper, robot processes."""

import json
from pathlib import Path

import numpy as np

PUSH_OBS = ("pusher_x.pos", "pusher_y.pos", "puck_x.pos", "puck_y.pos", "pusher_x.vel", "pusher_y.vel",
            "puck_x.vel", "puck_y.vel", "goal.x", "goal.y")
PUSH_ACTIONS = ("pusher_x", "pusher_y")


def push_gain(k_puck: float = 3.0, k_goal: float = 2.0) -> np.ndarray:
    """Gain of a linear PlanarPush controller: v = k_puck (puck - pusher) + k_goal (goal - puck)."""
    gain = np.zeros((2, 10))
    for axis in range(2):
        gain[axis, axis] = -k_puck
        gain[axis, 2 + axis] = k_puck - k_goal
        gain[axis, 8 + axis] = k_goal
    return gain


def make_policy(path, *, kind="dsrl", obs_names=PUSH_OBS, action_names=PUSH_ACTIONS, chunk_len=4,
                rate=20.0, gain=None, bias=None, opset=17, noise_input=False, spec=None, spec_overrides=None,
                output_name="action", obs_dim=None, action_dim=None, out_chunk=None, bound=0.3, noise_gain=0.001):
    """Write a linear ONNX policy: action = clip(gain @ obs + bias) repeated over the chunk.

    The graph follows the steer.policy/1 contract; every argument can be bent to make it malformed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from steer.robot.spec import SPEC_KEY, PolicySpec, graph_sha256

    obs_dim = len(obs_names) if obs_dim is None else obs_dim
    action_dim = len(action_names) if action_dim is None else action_dim
    gain = np.zeros((action_dim, obs_dim)) if gain is None else np.asarray(gain)
    bias = np.zeros(action_dim) if bias is None else np.asarray(bias, dtype=float)
    out_chunk = chunk_len if out_chunk is None else out_chunk
    inits = [numpy_helper.from_array(gain.T.astype(np.float32), "W"),
             numpy_helper.from_array(bias.astype(np.float32), "b"),
             numpy_helper.from_array(np.array(-bound, np.float32), "lo"),
             numpy_helper.from_array(np.array(bound, np.float32), "hi")]
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["lin"]),
             helper.make_node("Clip", ["lin", "lo", "hi"], ["a"])]
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])]
    if kind == "ppo":
        nodes.append(helper.make_node("Identity", ["a"], [output_name]))
        out_shape = ["batch", action_dim]
    else:
        inits.append(numpy_helper.from_array(np.array([1, out_chunk, 1], np.int64), "reps"))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes.append(helper.make_node("Unsqueeze", ["a", "axis1"], ["a3"]))
        if noise_input:
            # Noise shifts every action a little, so a test can see it was used.
            inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", chunk_len, action_dim]))
            inits.append(numpy_helper.from_array(np.array(noise_gain, np.float32), "eps"))
            nodes += [helper.make_node("Tile", ["a3", "reps"], ["tiled"]),
                      helper.make_node("Mul", ["noise", "eps"], ["small"]),
                      helper.make_node("Add", ["tiled", "small"], [output_name])]
        else:
            nodes.append(helper.make_node("Tile", ["a3", "reps"], [output_name]))
        out_shape = ["batch", out_chunk, action_dim]
    graph = helper.make_graph(nodes, "policy", inputs,
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if spec is None:
        spec = PolicySpec(kind=kind, task="steer/PlanarPush-v0", obs_names=tuple(obs_names),
                          action_names=tuple(action_names), obs_dim=obs_dim, action_dim=action_dim,
                          chunk_len=1 if kind == "ppo" else chunk_len, noise_input=noise_input, control_rate_hz=rate,
                          action_low=(-bound,) * action_dim, action_high=(bound,) * action_dim,
                          normalization={"obs_min": [-1.0] * obs_dim, "obs_max": [1.0] * obs_dim,
                                         "action_min": [-bound] * action_dim, "action_max": [bound] * action_dim},
                          weights_sha256=graph_sha256(model.SerializeToString()), source_run="tests").to_dict()
        spec.update(spec_overrides or {})  # written as a dict: overrides may break the contract on purpose
    if spec is not False:
        helper.set_model_props(model, {SPEC_KEY: spec if isinstance(spec, str) else json.dumps(spec)})
    onnx.save(model, str(path))
    return Path(path)


class RobotProcesses:
    """Starts ``python -m steer.robot.processes`` children in one DDS domain and cleans them up."""

    def __init__(self, dds, tmp_path):
        self.dds, self.tmp_path, self.procs = dds, tmp_path, []

    def start(self, which, **kwargs):
        import subprocess

        kwargs.setdefault("domain_id", self.dds["domain"])
        if which == "node":  # the node obeys the test operator (see arm_over_dds)
            kwargs.setdefault("robot", {}).setdefault("trusted_operator_keys", trusting_keys())
        # As on a robot: the control loops run under SCHED_FIFO where allowed (else a warning),
        # so other tests on the same cores cannot push them past their deadlines.
        kwargs.setdefault("rt_priority", 10)
        proc = subprocess.Popen([self.dds["python"], "-m", "steer.robot.processes", which, json.dumps(kwargs)],
                                env=self.dds["env"], stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except Exception:  # noqa: BLE001
                proc.kill()


class FakeClock:
    """A clock for the node that moves only when a test (or :class:`MemoryTransport`'s ``wait``) moves it."""

    def __init__(self, start_s: float = 1000.0, epoch_s: float = 1.7e9):
        self.now_ns = int(start_s * 1e9)
        self.epoch_ns = int(epoch_s * 1e9)

    def monotonic_ns(self) -> int:
        return self.now_ns

    def time_ns(self) -> int:
        return self.epoch_ns + self.now_ns

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now_ns += int(round(seconds * 1e9))


class MemoryTransport:
    """An in-process transport for unit tests of the node: publish appends to every subscriber's queue.

    With a ``clock`` (a :class:`FakeClock`), receive times come from it and ``wait`` lets the
    timeout pass on it at once when nothing is queued (as a real wait with no traffic would),
    so tests run without real sleeps; without one, both use the real monotonic clock.
    """

    def __init__(self, clock=None):
        import time

        self._time = time
        self.clock = clock
        self.queues = {}
        self.sent = {}

    def _now_ns(self):
        return self._time.monotonic_ns() if self.clock is None else self.clock.monotonic_ns()

    class _Pub:
        def __init__(self, outer, topic):
            self.outer, self.topic = outer, topic

        def publish(self, msg):
            self.outer.sent.setdefault(self.topic, []).append(msg)
            for q in self.outer.queues.get(self.topic, []):
                q.append((msg, self.outer._now_ns()))

        def matched(self):
            return len(self.outer.queues.get(self.topic, []))

        def wait_acked(self, timeout_s):
            return True

    class _Sub:
        def __init__(self, queue):
            self.queue = queue

        def take(self):
            items = list(self.queue)
            self.queue.clear()
            return items

        def matched(self):
            return 1

    def publisher(self, topic, msg_type, latched=False):
        return self._Pub(self, topic)

    def subscription(self, topic, msg_type, latched=False):
        queue = []
        self.queues.setdefault(topic, []).append(queue)
        return self._Sub(queue)

    def wait(self, timeout_s):
        if self.clock is None:
            self._time.sleep(min(timeout_s, 0.001))
        elif not any(q for queues in self.queues.values() for q in queues):
            self.clock.advance(timeout_s)

    def close(self):
        pass


def operator_key(seed: int = 1):
    """A fixed Ed25519 operator key (seed 1: the key the test robot configs trust)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def trusting(config, *keys):
    """``config`` trusting the given operator keys (default: :func:`operator_key`)."""
    from steer.robot.keys import public_key_hex

    keys = keys or (operator_key(),)
    return config.replace(trusted_operator_keys=tuple(public_key_hex(k.public_key()) for k in keys))


def signed(command, policy_sha256, clock=None, namespace="", key=None, args=None, now=None):
    """A signed operator command as the message the console publishes (time from a FakeClock if given)."""
    from steer.robot.keys import sign_command

    if now is None and clock is not None:
        now = clock.time_ns() / 1e9
    return sign_command(key or operator_key(), command, namespace, policy_sha256, args, now=now).to_message("robot")


def arm(transport, node, clock=None):
    """Publish a signed arm for ``node``'s running policy on the in-memory transport."""
    from steer.robot import messages as m

    transport.publisher("/operator_command", m.DiagnosticStatus).publish(
        signed("arm", node.policy_sha256, clock or node.clock, node.config.namespace))


def trusting_keys(*keys):
    """The 64-hex public keys of ``keys`` (default: :func:`operator_key`), for a robot config."""
    from steer.robot.keys import public_key_hex

    return [public_key_hex(k.public_key()) for k in (keys or (operator_key(),))]


def arm_over_dds(transport, policy, namespace="", timeout_s=60.0):
    """Arm a node process over DDS with the test operator's signed arm; returns its safety state once armed."""
    from steer.robot.closed_loop import send_signed_command
    from steer.robot.config import load_robot_config
    from steer.robot.promotion import file_sha256

    config = load_robot_config().replace(namespace=namespace)
    return send_signed_command(transport, config, operator_key(), "arm", file_sha256(policy),
                               until=lambda s: s.armed, timeout_s=timeout_s)
