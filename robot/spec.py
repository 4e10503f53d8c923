"""The wire contracts between training, the robot and the console, each defined once.

Torch-free: the robot installs this module without the training stack, and ``steer.agent``
may import it. Each contract has one writer and one reader here; a reader refuses bad input
with one :class:`WireError` sentence.

* :class:`PolicySpec`: the JSON an exported ONNX policy carries in ``metadata_props[SPEC_KEY]``
  (written by ``steer export``, read by the robot runtime and the console).
* :class:`SafetyState`: the node's ``diagnostic_msgs/DiagnosticStatus`` on the safety topic
  (written by the policy node, read by the console and the simulated robot).
* :class:`EpisodeStatus`: the simulated robot's episode events (written by the simulated robot,
  read by the node, the learner and the tests).
* :class:`OperatorCommand`: a signed operator command (release, arm, promote, adapt_start, reset_done) on
  ``<ns>/operator_command`` (written by the console, read by the node; ``reset_done`` by the robot itself;
  signing and checking are :mod:`steer.robot.keys`).
* :class:`LatentChunk`: one chunk's latent noise, on ``<ns>/latent`` (learner -> node, steered mode) and, as
  the node ran it, on ``<ns>/latent_executed`` (node -> learner).
* :class:`AdaptStatus` (learner -> console, ``<ns>/adapt_status``) and :class:`AdaptControl` (console ->
  learner, ``<ns>/adapt_control``): an adaptation session on a robot.

The messages carry one ``KeyValue`` per dataclass field, named after it (see
:func:`_encode_values`), so a field added to a message class travels without touching either end.

The BC baseline (decided here, used everywhere)
------------------------------------------------
A BC diffusion policy's action for an observation depends on its initial noise w. *The*
BC policy — the one ``steer bc`` evaluates, the conservative gate protects as its
baseline, the safe set falls back to, DSRL's warm-up samples, and the robot runs when no
learner steers it — draws

    w ~ N(0, I), clipped elementwise to ±latent_noise_bound.

Why clipped: DSRL's MDP has the latent box [-b, b] as its action space. With the
baseline inside that box, the gate's baseline, the fallback and the learner's warm-up
are all actions the learner could itself take, and the baseline the gate measures is
exactly the policy that ships. At b = 1.5 about 13 % of the elements are clipped.
The bound travels with the policy: the BC run's config and the ONNX spec both carry
``latent_noise_bound``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from steer.robot.errors import RobotError

#: The default latent noise bound b (DSRL's usual value).
DEFAULT_LATENT_NOISE_BOUND = 1.5


def base_noise(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """The BC baseline's initial noise: ``N(0, I)`` of ``shape`` clipped to ``±bound`` (float32).

    Every place that runs "the BC policy" draws its noise through this function, so the
    same generator state gives the same noise — and the same action chunk — everywhere.
    """
    if not bound > 0:
        raise ValueError(f"latent noise bound must be positive, got {bound}")
    return np.clip(rng.standard_normal(shape), -bound, bound).astype(np.float32)


class WireError(RobotError):
    """A spec or message that breaks its wire contract (one sentence, says what to do)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("the ONNX file is truncated or not an ONNX model; export it again.")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def graph_sha256(model_bytes: bytes) -> str:
    """sha256 of the serialized graph (``ModelProto.graph``: nodes, weights, inputs, outputs) in ONNX bytes.

    What :attr:`PolicySpec.weights_sha256` holds. It covers everything that decides what the policy
    computes and nothing of the metadata, so the spec can carry it; reading it needs neither
    ``onnx`` nor ``protobuf``, only a walk over the model's top-level protobuf fields.
    """
    graphs, pos = [], 0
    data = memoryview(model_bytes).tobytes() if not isinstance(model_bytes, bytes) else model_bytes
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise WireError("the ONNX file is truncated or not an ONNX model; export it again.")
            if number == 7:  # ModelProto.graph
                graphs.append(data[pos:pos + length])
            pos += length
        else:
            raise WireError("the ONNX file is not an ONNX model (bad protobuf field); export it again.")
        if pos > len(data):
            raise WireError("the ONNX file is truncated or not an ONNX model; export it again.")
    if len(graphs) != 1:
        raise WireError(f"the ONNX file holds {len(graphs)} graphs, not one; export it again.")
    return hashlib.sha256(graphs[0]).hexdigest()


# -- the ONNX policy spec ------------------------------------------------------------------

SPEC_KEY = "steer.spec"
"""Key of the spec in the ONNX model's ``metadata_props``."""
SPEC_FORMAT = "steer.policy/1"
"""Value of the spec's ``format`` key; a reader refuses any other."""
POLICY_KINDS = ("bc_diffusion", "dsrl", "ppo")
"""Kinds of exported policy."""


@dataclass(frozen=True)
class PolicySpec:
    """The JSON spec an exported policy carries (see DESIGN.md, "ONNX policy")."""

    kind: str
    """``bc_diffusion``, ``dsrl`` or ``ppo``."""
    task: str
    """Task (gymnasium id) the policy was trained on."""
    obs_names: tuple[str, ...]
    """Name of every observation element, in input order."""
    action_names: tuple[str, ...]
    """Name of every action element (the commanded joint), in output order."""
    obs_dim: int
    """Length of the observation vector."""
    action_dim: int
    """Length of one action."""
    chunk_len: int
    """Actions per query, executed open loop one per control tick (1 for PPO)."""
    noise_input: bool
    """Whether the graph takes the initial diffusion noise as input ``noise``."""
    control_rate_hz: float
    """Control rate the policy was trained at (Hz)."""
    action_low: tuple[float, ...]
    """Lower bound of each action element."""
    action_high: tuple[float, ...]
    """Upper bound of each action element."""
    weights_sha256: str = ""
    """sha256 of the ONNX graph (its nodes and weights) stored in the file: :func:`graph_sha256` of the
    file's bytes, so a reader recomputes it from the file alone."""
    source_run: str = ""
    """Run directory the policy came from."""
    normalization: Mapping[str, Any] = field(default_factory=dict)
    """Normalization statistics (informational: baked into the graph)."""
    latent_noise_bound: float = DEFAULT_LATENT_NOISE_BOUND
    """Bound b of the BC baseline's noise (see :func:`base_noise`); files older than the field read the default."""
    bev_shape: tuple[int, ...] = ()
    """Driving policies: shape [C, H, W] of the uint8 BEV input (empty otherwise)."""
    bev_channels: tuple[str, ...] = ()
    """Driving policies: name of every BEV channel (empty otherwise)."""
    obs_keys: tuple[str, ...] = ()
    """For driving policies with a single ``obs`` input: the observation keys concatenated into it, in order."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON object, ``format`` first."""
        out: dict[str, Any] = {"format": SPEC_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (dict(value) if f.name == "normalization"
                                                                        else value)
        return out

    def to_json(self) -> str:
        """The string stored in ``metadata_props[SPEC_KEY]``.

        Not checked here: a run without names or rate still exports (for parity checks and
        benchmarks); the reader refuses it, so no robot runs it.
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> PolicySpec:
        """Parse and check the spec string; :class:`WireError` (one sentence) when it is wrong."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise WireError(f"the '{SPEC_KEY}' metadata is not valid JSON; re-export the policy.") from None
        if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
            found = d.get("format") if isinstance(d, dict) else None
            raise WireError(f"spec format is {found!r}, expected {SPEC_FORMAT!r}; re-export the policy with this "
                            "version of steer.")
        try:
            spec = cls(
                kind=str(d["kind"]), task=str(d.get("task", "")),
                obs_names=tuple(str(n) for n in d["obs_names"]),
                action_names=tuple(str(n) for n in d["action_names"]),
                obs_dim=int(d["obs_dim"]), action_dim=int(d["action_dim"]), chunk_len=int(d["chunk_len"]),
                noise_input=bool(d.get("noise_input", False)), control_rate_hz=float(d["control_rate_hz"]),
                action_low=tuple(float(x) for x in d["action_low"]),
                action_high=tuple(float(x) for x in d["action_high"]),
                weights_sha256=str(d.get("weights_sha256", "")), source_run=str(d.get("source_run", "")),
                normalization=dict(d.get("normalization") or {}),
                latent_noise_bound=float(d.get("latent_noise_bound", DEFAULT_LATENT_NOISE_BOUND)),
                bev_shape=tuple(int(x) for x in d.get("bev_shape") or ()),
                bev_channels=tuple(str(x) for x in d.get("bev_channels") or ()))
        except (KeyError, TypeError, ValueError) as err:
            raise WireError(f"the policy spec lacks or mistypes field {err}; re-export the policy.") from None
        problems = spec.problems()
        if problems:
            raise WireError(f"the policy spec is inconsistent ({'; '.join(problems)}); re-export the policy.")
        return spec

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> PolicySpec:
        """The spec in an ONNX model's metadata map; :class:`WireError` when it is missing or wrong."""
        if SPEC_KEY not in metadata:
            raise WireError(f"no '{SPEC_KEY}' metadata; export it with `steer export`, which writes the names, "
                            "limits and rate the robot needs.")
        return cls.from_json(metadata[SPEC_KEY])

    def problems(self) -> list[str]:
        """What is inconsistent in the spec (empty when nothing)."""
        problems = []
        if self.kind not in POLICY_KINDS:
            problems.append(f"kind {self.kind!r} is not one of {POLICY_KINDS}")
        if len(self.obs_names) != self.obs_dim:
            problems.append(f"{len(self.obs_names)} obs_names for obs_dim {self.obs_dim}")
        if len(self.action_names) != self.action_dim:
            problems.append(f"{len(self.action_names)} action_names for action_dim {self.action_dim}")
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            problems.append("action_low/action_high do not have action_dim entries")
        elif not all(lo <= hi for lo, hi in zip(self.action_low, self.action_high)):
            problems.append("action_low exceeds action_high")
        if self.chunk_len < 1 or (self.kind == "ppo" and self.chunk_len != 1):
            problems.append(f"chunk_len {self.chunk_len} is invalid for kind {self.kind!r}")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            problems.append(f"control_rate_hz {self.control_rate_hz} is not a positive rate")
        if not (math.isfinite(self.latent_noise_bound) and self.latent_noise_bound > 0):
            problems.append(f"latent_noise_bound {self.latent_noise_bound} is not positive")
        return problems


# -- DiagnosticStatus messages: one KeyValue per field ---------------------------------------

def _encode_values(obj: Any) -> list[tuple[str, str]]:
    """(key, text) of every field of a message dataclass; bools as ``true``/``false``."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, tuple):  # numbers, comma-separated; repr keeps every float exact
            text = ",".join(str(x) if isinstance(x, (int, str)) else repr(float(x)) for x in value)
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append((f.name, text))
    return out


def _decode_values(cls: type, values: Mapping[str, str], what: str) -> dict[str, Any]:
    """Field values of ``cls`` from a message's key → text.

    Absent keys keep their defaults; unknown keys are ignored (a newer sender's extra fields).
    """
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        text, kind = values[f.name], hints[f.name]
        if kind is bool:
            if text not in ("true", "false"):
                raise WireError(f"the {what} says {f.name}={text!r}; expected true or false.")
            out[f.name] = text == "true"
        elif kind is int:
            try:
                out[f.name] = int(text)
            except ValueError:
                raise WireError(f"the {what} says {f.name}={text!r}; expected an integer.") from None
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            try:
                out[f.name] = tuple(item(x) for x in text.split(",")) if text else ()
            except ValueError:
                raise WireError(f"the {what} says {f.name}={text[:60]!r}; expected comma-separated "
                                f"{item.__name__}s.") from None
        else:
            try:
                out[f.name] = kind(text)
            except (TypeError, ValueError):
                raise WireError(f"the {what} says {f.name}={text!r}, which is not a {kind.__name__}.") from None
    return out


def _values_of(message: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in message.values}


def _status(level: int, name: str, text: str, hardware_id: str, values: list[tuple[str, str]]):
    from steer.robot import messages as msg  # cyclonedds: only where messages are built (not in training)

    return msg.DiagnosticStatus(level=level, name=name, message=text, hardware_id=hardware_id,
                                values=[msg.KeyValue(k, v) for k, v in values])


# Levels of diagnostic_msgs/DiagnosticStatus (also in steer.robot.messages, which needs cyclonedds).
_DIAG_OK, _DIAG_WARN, _DIAG_ERROR = 0, 1, 2


@dataclass(frozen=True)
class SafetyState:
    """What the policy node reports on its safety topic, for the console and the robot."""

    mode: str
    """Shield mode: idle, armed, running, stopped or estopped."""
    reason: str = ""
    """Why the shield entered its mode."""
    ticks: int = 0
    """Commands the shield filtered."""
    clipped: int = 0
    """Commands it changed to keep them in the limits."""
    watchdog_trips: int = 0
    """Ticks on a stale or missing observation."""
    non_finite: int = 0
    """Non-finite or malformed commands or observations replaced by the safe command."""
    estop_latched: bool = False
    """True while the e-stop holds the robot."""
    watchdog_tripped: bool = False
    """True while the node is running on a stale observation (sending the safe command)."""
    episode: str = ""
    """The robot's current episode (empty: none announced)."""
    command_subscribers: int = 0
    """Readers matched to the node's command writer."""
    policy: str = ""
    """Absolute path of the policy the node runs."""
    policy_sha256: str = ""
    """sha256 of that file."""
    promote_error: str = ""
    """Why the last promotion was refused (empty when none was)."""
    armed: bool = False
    """True while a signed arm lets the policy command the robot (a node starts unarmed)."""
    operator_refusals: int = 0
    """Operator commands refused (unsigned, untrusted, stale, replayed, for another robot or policy)."""
    last_refusal: str = ""
    """The last refusal's one sentence (never anything about files on the robot)."""
    rejected_messages: int = 0
    """Received messages the node dropped: over the size bounds, malformed, or stamped in the future."""
    bag_error: str = ""
    """Why the node cannot write its bags (empty while it can); it keeps commanding either way."""
    bag_dropped: int = 0
    """Messages left out of the bags (the writer fell behind or failed)."""
    steered: bool = False
    """The node runs in steered mode: a diffusion policy's noise comes from the latent topic."""
    adapt_session: str = ""
    """The adaptation session a signed ``adapt_start`` armed (empty: none; an e-stop ends it)."""
    latents_used: int = 0
    """Chunks that ran the learner's latent."""
    latents_late: int = 0
    """Latents that arrived after their chunk had started (too late to run)."""
    latents_fallback: int = 0
    """Chunks of a session that ran the baseline's noise because their latent was late or missing."""
    latents_rejected: int = 0
    """Latents refused: outside the armed session, out of bounds, wrong shape or not finite."""

    @property
    def level(self) -> int:
        """DiagnosticStatus level: OK while running on fresh observations, ERROR when e-stopped or stale."""
        if self.mode == "estopped" or (self.mode == "running" and self.watchdog_tripped):
            return _DIAG_ERROR
        return _DIAG_OK if self.mode == "running" else _DIAG_WARN

    @property
    def interventions(self) -> dict[str, int]:
        """The shield's counters of changed commands, by name."""
        return {"clipped": self.clipped, "watchdog_trips": self.watchdog_trips, "non_finite": self.non_finite}

    def to_message(self, robot: str):
        """The state as ``diagnostic_msgs/DiagnosticStatus`` from robot ``robot``."""
        return _status(self.level, f"{robot}/safety", self.reason, robot, _encode_values(self))

    @classmethod
    def from_message(cls, message: Any) -> SafetyState:
        """Parse a safety-state message; :class:`WireError` when it is not one (no ``mode``) or mistyped."""
        values = _values_of(message)
        if "mode" not in values:
            raise WireError("the safety state has no 'mode'; it was not sent by a steer policy node.")
        return cls(**_decode_values(cls, values, "safety state"))


@dataclass(frozen=True)
class EpisodeStatus:
    """An episode event of the simulated robot: the node starts a new chunk (and bag) on a new episode."""

    event: str = ""
    """``connect`` (discovery handshake, not an episode), ``start``, ``end`` or ``awaiting_reset``: a robot
    whose ``reset_mode`` is ``operator`` holds still after episode ``episode`` ended until a signed
    ``reset_done`` for that episode arrives (it repeats this event about once a second while it waits)."""
    episode: str = ""
    """Index of the episode (empty on ``connect``)."""
    seed: int = 0
    """Seed the episode's task was reset with."""
    steps: int = 0
    """Steps taken (``end``)."""
    is_success: bool = False
    """Whether the task succeeded (``end``)."""
    operator_refusals: int = 0
    """``awaiting_reset``: signed ``reset_done`` commands the robot refused so far (unsigned, untrusted,
    stale, replayed, for another robot or episode, or sent while it was not waiting)."""
    last_refusal: str = ""
    """``awaiting_reset``: the last refusal's one sentence."""

    def to_message(self, robot: str):
        """The event as ``diagnostic_msgs/DiagnosticStatus`` from robot ``robot``."""
        return _status(_DIAG_OK, f"{robot}/episode", self.event, robot, _encode_values(self))

    @classmethod
    def from_message(cls, message: Any) -> EpisodeStatus:
        """Parse an episode event; :class:`WireError` (one sentence) when a field is mistyped."""
        return cls(**_decode_values(cls, _values_of(message), "episode status"))


# -- Signed operator commands ------------------------------------------------------------------

#: Commands that change what a robot does and so need an operator's signature. ``reset_done`` (the operator
#: confirms the scene is reset after episode ``args["episode"]``, so the next may start) is for the robot,
#: which checks it itself; the node lets it pass.
SIGNED_COMMANDS = ("release", "arm", "promote", "adapt_start", "reset_done")
ROBOT_COMMANDS = ("reset_done",)
"""Signed commands that the robot (the simulated one here), not the policy node, acts on."""
_SIGNED_DOMAIN = b"steer-signed-command-v1\n"


@dataclass(frozen=True)
class OperatorCommand:
    """One operator command with its Ed25519 signature (see :mod:`steer.robot.keys`).

    Travels as ``DiagnosticStatus`` on ``<ns>/operator_command`` (reliable, volatile: a restarted
    node never sees an old command again), one KeyValue per field.
    """

    command: str
    """One of :data:`SIGNED_COMMANDS`."""
    namespace: str
    """The robot namespace it is meant for; another robot refuses it."""
    policy_sha256: str
    """sha256 of the policy the operator saw (release/arm: the active one; promote: the new file; reset_done:
    empty, the robot does not know the policy)."""
    timestamp: float
    """Unix time of signing (s); the robot refuses it outside its window."""
    nonce: str
    """Random hex; the robot refuses a nonce it has seen."""
    args: dict[str, str] = field(default_factory=dict)
    """Command-specific arguments, signed too (promote: ``policy``, a file name in the policies directory;
    adapt_start: ``session``; reset_done: ``episode``, the episode after which the robot waits)."""
    key_id: str = ""
    """Which trusted key signed it (first 16 hex of the public key)."""
    signature: str = ""
    """Ed25519 signature (hex) over :meth:`payload`."""

    def payload(self) -> bytes:
        """The exact bytes that are signed: every field except the signature, as canonical JSON."""
        body = {k: v for k, v in dataclasses.asdict(self).items() if k != "signature"}
        return _SIGNED_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_fields(self) -> dict[str, str]:
        """The fields as text (the message's KeyValues)."""
        d = dataclasses.asdict(self)
        d["timestamp"] = repr(self.timestamp)
        d["args"] = json.dumps(self.args, sort_keys=True, separators=(",", ":"))
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> OperatorCommand:
        """Parse :meth:`to_fields`' output; :class:`WireError` (one sentence) when malformed."""
        try:
            args = json.loads(fields.get("args", "{}") or "{}")
            if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in args.items()):
                raise ValueError
            timestamp = float(fields["timestamp"])
            if not math.isfinite(timestamp):
                raise ValueError
            return cls(command=str(fields["command"]), namespace=str(fields.get("namespace", "")),
                       policy_sha256=str(fields.get("policy_sha256", "")), timestamp=timestamp,
                       nonce=str(fields["nonce"]), args=args, key_id=str(fields.get("key_id", "")),
                       signature=str(fields.get("signature", "")))
        except (KeyError, ValueError, TypeError):
            raise WireError("malformed operator command: it needs command, timestamp, nonce and "
                            "signature.") from None

    def to_message(self, robot: str):
        """The command as ``diagnostic_msgs/DiagnosticStatus`` to robot ``robot``."""
        return _status(_DIAG_OK, f"{robot}/{self.command}", self.command, robot, list(self.to_fields().items()))

    @classmethod
    def from_message(cls, message: Any) -> OperatorCommand:
        """Parse a command message; :class:`WireError` (one sentence) when malformed."""
        return cls.from_fields(_values_of(message))


# -- Adapting on a robot (DSRL over the wire) ---------------------------------------------------

STEERED_LEAD_IN_STEPS = 1
"""Steered mode: an episode opens with a lead-in, chunk 0: the node holds still (the shield's ``hold``
command, sent on time) for this many ticks and queries no policy; chunk ``k ≥ 1`` starts at step
``lead_in + (k − 1) · chunk_len``. The node never waits for the learner, so no latent chosen from an episode's
first observation could reach its first step; during the lead-in the learner chooses chunk 1 from that
observation, and because the robot held still, chunk 1 runs on (nearly) the observation it was chosen from.
The start of an episode, where a policy commits to how it solves the task, is thus steered like every other
chunk, instead of running a whole chunk of the baseline's noise."""


def steered_chunk_start(chunk: int, chunk_len: int, lead_in: int = STEERED_LEAD_IN_STEPS) -> int:
    """The step at which chunk ``chunk`` of a steered episode starts (no watchdog restarts in between)."""
    return 0 if chunk <= 0 else lead_in + (chunk - 1) * chunk_len


LATENT_SOURCES = ("learner", "baseline")
"""Who chose an executed chunk's noise: the learner's latent, or the baseline's (fallback or gate)."""


@dataclass(frozen=True)
class LatentChunk:
    """One chunk's initial diffusion noise w.

    On ``<ns>/latent`` the learner sends the latent it wants run for chunk ``chunk`` of episode ``episode``;
    on ``<ns>/latent_executed`` the node sends what it actually ran for that chunk (``source``) with the
    observation it ran the policy on, so the learner stores the transition that happened.
    """

    session: str = ""
    """Adaptation session (the id the signed ``adapt_start`` armed)."""
    episode: str = ""
    """The robot's episode (as in :class:`EpisodeStatus`)."""
    chunk: int = 0
    """Index of the chunk within the episode (the node queries the policy at :func:`steered_chunk_start`)."""
    chunk_len: int = 0
    """Rows of the noise (the policy's chunk length)."""
    action_dim: int = 0
    """Columns of the noise (the policy's action dimension)."""
    noise: tuple[float, ...] = ()
    """The noise, row-major ``[chunk_len, action_dim]``."""
    source: str = "learner"
    """``learner`` or ``baseline`` (executed chunks: the baseline's noise ran)."""
    obs: tuple[float, ...] = ()
    """Executed chunks: the observation the policy ran on (policy order); empty on ``latent``."""
    sent_ns: int = 0
    """Wall-clock time it was sent (ns since the epoch), for latency figures."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(chunk_len, action_dim)``."""
        return self.chunk_len, self.action_dim

    def problems(self, shape: tuple[int, int], bound: float) -> str:
        """Why this latent cannot run on a policy of noise ``shape`` with ``bound`` (empty when it can)."""
        if self.shape != tuple(shape) or len(self.noise) != shape[0] * shape[1]:
            return f"latent of shape {self.shape} with {len(self.noise)} values; the policy takes {tuple(shape)}"
        if not all(math.isfinite(x) for x in self.noise):
            return "latent is not finite"
        if any(abs(x) > bound for x in self.noise):
            return f"latent exceeds the noise bound {bound:g}"
        return ""

    def array(self) -> np.ndarray:
        """The noise as float32 ``[chunk_len, action_dim]``."""
        return np.asarray(self.noise, dtype=np.float32).reshape(self.chunk_len, self.action_dim)

    def to_message(self, robot: str):
        """The chunk as ``diagnostic_msgs/DiagnosticStatus`` from ``robot`` (the node) or to it (the learner)."""
        return _status(_DIAG_OK, f"{robot}/latent", self.source, robot, _encode_values(self))

    @classmethod
    def from_message(cls, message: Any) -> LatentChunk:
        """Parse a latent chunk; :class:`WireError` (one sentence) when a field is mistyped."""
        chunk = cls(**_decode_values(cls, _values_of(message), "latent chunk"))
        if chunk.source not in LATENT_SOURCES:
            raise WireError(f"the latent chunk's source is {chunk.source[:40]!r}; expected one of {LATENT_SOURCES}.")
        return chunk


ADAPT_STATES = ("waiting", "running", "paused", "stopped", "done")
"""States of an adaptation session, as the learner reports them."""
GATE_CHOICES = ("explore", "baseline", "")
"""What the conservative gate runs in the current episode (empty: no episode yet)."""


@dataclass(frozen=True)
class AdaptStatus:
    """The learner's report on ``<ns>/adapt_status`` (about 1 Hz and on every change), for the console."""

    session: str = ""
    """Adaptation session id."""
    state: str = "waiting"
    """``waiting`` (for the robot or an armed session), ``running``, ``paused``, ``stopped`` or ``done``."""
    algo: str = "sac"
    """``sac`` or ``na``."""
    episodes: int = 0
    """Episodes finished (and learned from) in this run."""
    env_steps: int = 0
    """Robot steps learned from."""
    success: float = 0.0
    """Success rate over the recent episodes."""
    baseline_success: float = 0.0
    """L_b: the lower confidence bound of the baseline's success, measured on this robot."""
    threshold: float = 0.0
    """(1 − α)·L_b: the gate keeps episodes above this."""
    rho: float = 0.0
    """Probability that the gate runs the learner for an episode."""
    gate_choice: str = ""
    """``explore`` or ``baseline``: what the current episode runs."""
    shield_interventions: int = 0
    """The node's shield interventions (clipped + watchdog + non-finite) so far."""
    late_latents: int = 0
    """Latents the node reported late."""
    fallbacks: int = 0
    """Chunks that ran the baseline's noise because the latent was late or missing."""
    last_error: str = ""
    """The learner's last problem, one sentence (empty when none)."""
    awaiting_reset: str = ""
    """The episode after which the robot holds still until the operator's signed ``reset_done`` (the robot's
    ``awaiting_reset`` event; empty: it is not waiting)."""

    def to_message(self, robot: str):
        """The status as ``diagnostic_msgs/DiagnosticStatus`` about ``robot``."""
        level = _DIAG_ERROR if self.last_error else (_DIAG_OK if self.state == "running" else _DIAG_WARN)
        return _status(level, f"{robot}/adapt", self.state, robot, _encode_values(self))

    @classmethod
    def from_message(cls, message: Any) -> AdaptStatus:
        """Parse a status; :class:`WireError` (one sentence) when it is not one or mistyped."""
        values = _values_of(message)
        if values.get("state") not in ADAPT_STATES:
            raise WireError(f"the adaptation status has state {values.get('state', '')[:40]!r}; expected one of "
                            f"{ADAPT_STATES}.")
        return cls(**_decode_values(cls, values, "adaptation status"))


ADAPT_COMMANDS = ("pause", "resume", "stop", "mark_success", "mark_failure", "takeover")
"""Console → learner commands. Unsigned: each stops or judges, none makes the robot move."""


@dataclass(frozen=True)
class AdaptControl:
    """An operator's command to the learner on ``<ns>/adapt_control``.

    ``mark_success`` / ``mark_failure`` give the outcome of the current (or just ended) episode where the
    robot has no success topic, and override it where it has; ``takeover`` ends the episode as a failure
    (the operator took the robot); ``pause`` stops publishing latents (the node runs the baseline), ``resume``
    continues inside the already-armed session; ``stop`` ends the learner's run.
    """

    command: str
    """One of :data:`ADAPT_COMMANDS`."""
    session: str = ""
    """Session it is meant for (empty: whichever runs)."""
    episode: str = ""
    """Episode a mark is about (empty: the current or the last one)."""
    stamp_ns: int = 0
    """Wall-clock time it was sent (ns since the epoch)."""

    def to_message(self, robot: str):
        """The command as ``diagnostic_msgs/DiagnosticStatus`` about ``robot``."""
        return _status(_DIAG_OK, f"{robot}/adapt_control", self.command, robot, _encode_values(self))

    @classmethod
    def from_message(cls, message: Any) -> AdaptControl:
        """Parse a command; :class:`WireError` (one sentence) when it is not one of :data:`ADAPT_COMMANDS`."""
        values = _values_of(message)
        if values.get("command") not in ADAPT_COMMANDS:
            raise WireError(f"adaptation command {values.get('command', '')[:40]!r} is not one of {ADAPT_COMMANDS}.")
        return cls(**_decode_values(cls, values, "adaptation command"))
