"""An exported policy, run with onnxruntime: spec and shape checks, open-loop chunk execution.

The ONNX file carries its spec (:class:`~steer.robot.spec.PolicySpec`) as JSON in its
metadata. A policy that cannot run on the robot is refused with
one sentence (:class:`~steer.robot.errors.PolicyRefused`) before it commands anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steer.robot.config import RobotConfig
from steer.robot.errors import PolicyRefused
from steer.robot.spec import PolicySpec, WireError, base_noise

MIN_OPSET = 17


def _dims_match(shape: list, expected: list[int | None]) -> bool:
    if len(shape) != len(expected):
        return False
    # Symbolic or unknown dims (str/None) match anything; fixed dims must be equal.
    return all(e is None or not isinstance(s, int) or s == e for s, e in zip(shape, expected))


class OnnxPolicy:
    """An ONNX policy checked against its spec and, optionally, a robot config.

    Call it with one observation (float, ``[obs_dim]``); it returns the action chunk,
    float64 ``[chunk_len, action_dim]`` (PPO: ``[1, action_dim]``).
    """

    def __init__(self, path: str | Path, robot: RobotConfig | None = None, threads: int = 1, seed: int = 0,
                 model_bytes: bytes | None = None):
        """``model_bytes``: the file's bytes, already read and checked (a promotion); the path then only
        names the policy, and nothing is read from disk again."""
        import onnxruntime as ort  # imported here so that `steer robot --help` stays instant

        self.path = Path(path)
        where = f"policy {str(self.path)!r}"
        if model_bytes is None and not self.path.is_file():
            raise PolicyRefused(f"{where} does not exist; export one with `steer export RUN --out policy.onnx`.")
        self._check_opset(where, model_bytes)
        options = ort.SessionOptions()
        # One thread each: the control loop must not fight the simulator and DDS for cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path) if model_bytes is None else model_bytes, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises several private exception types
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise PolicyRefused(f"{where} is not a loadable ONNX model ({first}).") from None
        try:
            self.spec = PolicySpec.from_metadata(self.session.get_modelmeta().custom_metadata_map)
        except WireError as err:
            raise PolicyRefused(f"{where}: {err}") from None
        self._check_graph(where)
        self._rng = np.random.default_rng(seed)
        self._probe(where)
        if robot is not None:
            self.check_robot(robot)

    def _check_opset(self, where: str, model_bytes: bytes | None = None) -> None:
        try:
            import onnx  # optional on a robot: the opset check needs the protobuf reader
        except ImportError:
            return
        try:
            model = (onnx.load(str(self.path), load_external_data=False) if model_bytes is None
                     else onnx.load_from_string(model_bytes))
        except Exception:  # noqa: BLE001 - protobuf decode errors have no common public base
            raise PolicyRefused(f"{where} is not an ONNX model (it does not parse); export it again.") from None
        opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        if opsets and max(opsets) < MIN_OPSET:
            raise PolicyRefused(f"{where} uses ONNX opset {max(opsets)}; the runtime needs opset >= {MIN_OPSET}, "
                                "so export it again.")

    def _check_graph(self, where: str) -> None:
        spec = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "bev" in inputs or "measurements" in inputs:
            raise PolicyRefused(f"{where} is a driving policy (inputs bev, measurements); the joint-space robot "
                                "node runs policies with input 'obs'.")
        if "obs" not in inputs:
            raise PolicyRefused(f"{where} has inputs {sorted(inputs)}, but a policy must take 'obs'.")
        extra = set(inputs) - {"obs", "noise"}
        if extra:
            raise PolicyRefused(f"{where} has unexpected inputs {sorted(extra)}; a policy takes 'obs' "
                                "(and 'noise' for diffusion policies).")
        if "noise" in inputs and not spec.noise_input:
            raise PolicyRefused(f"{where} takes 'noise' but its spec says noise_input is false; re-export it.")
        if spec.noise_input and "noise" not in inputs:
            raise PolicyRefused(f"{where} has no 'noise' input but its spec says noise_input is true; re-export it.")
        for name, node in inputs.items():
            if node.type != "tensor(float)":
                raise PolicyRefused(f"{where}: input {name!r} is {node.type}, expected float32.")
        if not _dims_match(inputs["obs"].shape, [None, spec.obs_dim]):
            raise PolicyRefused(f"{where}: input 'obs' has shape {inputs['obs'].shape}, but the spec says "
                                f"[batch, {spec.obs_dim}].")
        if "noise" in inputs and not _dims_match(inputs["noise"].shape, [None, spec.chunk_len, spec.action_dim]):
            raise PolicyRefused(f"{where}: input 'noise' has shape {inputs['noise'].shape}, but the spec says "
                                f"[batch, {spec.chunk_len}, {spec.action_dim}].")
        if "action" not in outputs:
            raise PolicyRefused(f"{where} has outputs {sorted(outputs)}, but a policy must output 'action'.")
        expected = [None, spec.action_dim] if spec.kind == "ppo" else [None, spec.chunk_len, spec.action_dim]
        if outputs["action"].type != "tensor(float)" or not _dims_match(outputs["action"].shape, expected):
            raise PolicyRefused(f"{where}: output 'action' is {outputs['action'].type} {outputs['action'].shape}, "
                                f"but the spec says float32 {['batch'] + expected[1:]}.")

    def _probe(self, where: str) -> None:
        # Declared shapes can lie (symbolic dims); one real call checks what comes out. It passes zero
        # noise so that the policy's own noise stream starts at the first real query.
        zero_noise = np.zeros((self.spec.chunk_len, self.spec.action_dim)) if self.spec.noise_input else None
        try:
            out = self._run(np.zeros(self.spec.obs_dim, dtype=np.float32), zero_noise)
        except PolicyRefused:
            raise
        except Exception as err:  # noqa: BLE001
            raise PolicyRefused(f"{where} fails on a zero observation ({str(err).strip()[:160]}).") from None
        if out.shape != (self.chunk_len, self.spec.action_dim):
            raise PolicyRefused(f"{where} returns actions of shape {out.shape}, expected "
                                f"({self.chunk_len}, {self.spec.action_dim}); re-export it.")

    @property
    def chunk_len(self) -> int:
        """Actions per query."""
        return 1 if self.spec.kind == "ppo" else self.spec.chunk_len

    def check_robot(self, robot: RobotConfig) -> None:
        """Refuse (one sentence) a policy whose names, joints or rate do not fit this robot."""
        where = f"policy {str(self.path)!r}"
        missing = [n for n in self.spec.obs_names if n not in robot.observation_names()]
        if missing:
            raise PolicyRefused(f"{where} needs observations {missing} that robot {robot.name!r} does not "
                                f"provide; check the policy's task and the robot config.")
        joints = tuple(n.split(".")[0] for n in self.spec.action_names)
        if sorted(joints) != sorted(robot.command_joint_names) or len(set(joints)) != len(joints):
            raise PolicyRefused(f"{where} commands {list(joints)}, but robot {robot.name!r} commands "
                                f"{list(robot.command_joint_names)}; use the policy trained for this robot.")
        if abs(self.spec.control_rate_hz - robot.control_rate_hz) > 1e-6 * robot.control_rate_hz:
            raise PolicyRefused(f"{where} was trained at {self.spec.control_rate_hz:g} Hz but the robot runs at "
                                f"{robot.control_rate_hz:g} Hz; set the robot's rate to the policy's.")

    def command_order(self, robot: RobotConfig) -> np.ndarray:
        """Index that reorders a policy action into the robot's command-joint order."""
        joints = [n.split(".")[0] for n in self.spec.action_names]
        return np.array([joints.index(j) for j in robot.command_joint_names])

    def _run(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        feed = {"obs": np.asarray(obs, dtype=np.float32).reshape(1, self.spec.obs_dim)}
        if self.spec.noise_input:
            if noise is None:  # the BC baseline's noise, as in training and evaluation
                noise = base_noise(self._rng, (self.spec.chunk_len, self.spec.action_dim), self.spec.latent_noise_bound)
            feed["noise"] = np.asarray(noise, dtype=np.float32).reshape(1, self.spec.chunk_len, self.spec.action_dim)
        (action,) = self.session.run(["action"], feed)
        action = np.asarray(action, dtype=np.float64)
        # [1, chunk, A] -> [chunk, A]; PPO's [1, A] -> [1, A]. A wrong shape stays wrong for _probe to see.
        return action[0] if action.ndim == 3 else action

    def base_noise(self) -> np.ndarray:
        """The next draw of the BC baseline's noise (the stream an unsteered call uses), ``[chunk_len, action_dim]``."""
        return base_noise(self._rng, (self.spec.chunk_len, self.spec.action_dim), self.spec.latent_noise_bound)

    def __call__(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The action chunk for one observation: float64 ``[chunk_len, action_dim]``."""
        obs = np.asarray(obs)
        if obs.shape != (self.spec.obs_dim,):
            raise PolicyRefused(f"observation has shape {obs.shape}, the policy takes ({self.spec.obs_dim},).")
        return self._run(obs, noise)


class ChunkExecutor:
    """Open-loop chunk execution, exactly as in training: query at a chunk boundary, then
    execute the chunk's actions one per control tick, then query again."""

    def __init__(self, policy: OnnxPolicy):
        self.policy = policy
        self._chunk: np.ndarray | None = None
        self._index = 0
        self.queries = 0
        self.chunk_index = 0
        """Index (within the episode) of the chunk the next query starts."""

    def reset(self) -> None:
        """Start a new episode: the next tick queries the policy."""
        self._chunk = None
        self._index = 0
        self.chunk_index = 0

    def restart_chunk(self) -> None:
        """Drop the chunk in progress (back from a watchdog trip): the next tick queries the next chunk of
        the same episode, so chunk indices keep counting."""
        self._chunk = None
        self._index = 0

    def skip_chunk(self) -> None:
        """Count a chunk that runs no policy query (steered mode's lead-in, chunk 0): the next query starts the
        next chunk."""
        self._chunk = None
        self._index = 0
        self.chunk_index += 1

    @property
    def at_boundary(self) -> bool:
        """True when the next tick queries the policy."""
        return self._chunk is None or self._index >= len(self._chunk)

    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The action for this tick (policy order, float64); ``noise`` is used when this tick queries
        (None: the baseline's)."""
        if self.at_boundary:
            self._chunk = self.policy(obs, noise)
            self._index = 0
            self.queries += 1
            self.chunk_index += 1
        action = self._chunk[self._index]
        self._index += 1
        return action
