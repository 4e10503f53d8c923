"""The policy node's intake: what it accepts from the network, before the policy sees it.

Received messages over the size bounds are dropped (before decoding where the transport
allows) and counted; only the joints the config names are kept; each observed joint carries
its own receive time (a joint state for other joints refreshes nothing); header stamps far in
the future are refused; anything that is not a number becomes NaN, which the shield holds on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from steer.robot import messages as msg
from steer.robot.config import RobotConfig

MAX_SEQUENCE = 1024
"""Most elements of any list in a received message (names, values, array data)."""
MAX_TEXT = 4096
"""Longest string in a received message."""
MAX_BYTES = {"DiagnosticStatus": 8 * 1024, "Bool": 1024}
"""Largest serialized message the node decodes, by type (others: the transport's bound, 64 KiB):
operator and episode messages are small, and decoding many key-values is slow."""
MAX_STAMP_AHEAD_NS = 500_000_000
"""A joint state stamped further than this ahead of the node's wall clock is refused."""


def message_within_bounds(m, depth: int = 0) -> bool:
    """Whether every list and string in a message is within :data:`MAX_SEQUENCE` / :data:`MAX_TEXT`.

    Walks the message's fields (nested messages too); lists of numbers are only measured.
    """
    if depth > 8 or not dataclasses.is_dataclass(m):
        return depth <= 8
    for f in dataclasses.fields(m):
        value = getattr(m, f.name, None)
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                return False
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_SEQUENCE:
                return False
            if value and isinstance(value[0], str):
                if any(not isinstance(v, str) or len(v) > MAX_TEXT for v in value):
                    return False
            elif value and dataclasses.is_dataclass(value[0]):
                if not all(message_within_bounds(v, depth + 1) for v in value):
                    return False
        elif dataclasses.is_dataclass(value) and not message_within_bounds(value, depth + 1):
            return False
    return True


class IntakeCounters:
    """Received messages the node refused, by why (published in the safety state as ``rejected_messages``)."""

    def __init__(self):
        self.oversize = 0
        self.malformed = 0
        self.stale_or_future = 0
        self._subs: list = []

    def total(self) -> int:
        """Every refused message, including those the transport dropped before decoding them."""
        dropped = sum(getattr(s, "oversize", 0) for s in self._subs)
        return self.oversize + self.malformed + self.stale_or_future + dropped


class _BoundedSubscription:
    """A subscription whose ``take`` drops (and counts) messages over the size bounds."""

    def __init__(self, inner, counters: IntakeCounters):
        self.inner, self.counters = inner, counters

    def take(self) -> list:
        out = []
        for m, recv in self.inner.take():
            try:
                ok = message_within_bounds(m)
            except Exception:  # noqa: BLE001 - a message a check cannot even walk is malformed
                ok = False
            if ok:
                out.append((m, recv))
            else:
                self.counters.oversize += 1
        return out

    def matched(self) -> int:
        return self.inner.matched()


class BoundedTransport:
    """The node's view of its transport: every subscription is size-bounded."""

    def __init__(self, inner, counters: IntakeCounters):
        self.inner, self.counters = inner, counters

    def subscription(self, topic: str, msg_type: type, latched: bool = False):
        sub = self.inner.subscription(topic, msg_type, latched=latched)
        limit = MAX_BYTES.get(msg_type.__name__)
        if limit and hasattr(sub, "max_sample_bytes"):  # a transport that can drop before decoding
            sub.max_sample_bytes = min(sub.max_sample_bytes or limit, limit)
        self.counters._subs.append(sub)
        return _BoundedSubscription(sub, self.counters)

    def publisher(self, topic: str, msg_type: type, latched: bool = False):
        return self.inner.publisher(topic, msg_type, latched=latched)


class ObservationAssembler:
    """Builds the policy's observation vector, by name, from the latest messages.

    Only the joints the robot config names are kept (memory stays bounded whatever names arrive),
    each with the time it was last observed: the observation is as old as its oldest observed joint,
    so joint states for other joints never make stale positions look fresh.
    """

    def __init__(self, config: RobotConfig, obs_names: tuple[str, ...]):
        self.config = config
        self._known = frozenset(config.joints)
        self._joint: dict[str, tuple[float, float, float]] = {}  # joint name -> (pos, vel, eff)
        self._joint_ns: dict[str, int] = {}  # joint name -> monotonic time it was observed
        self._vectors: dict[str, np.ndarray] = {}
        self._vector_fields = {v.name: v.fields for v in config.vectors}
        self.obs_names = obs_names

    @property
    def obs_names(self) -> tuple[str, ...]:
        """Observation names of the policy, in its order."""
        return self._obs_names

    @obs_names.setter
    def obs_names(self, names: tuple[str, ...]) -> None:
        self._obs_names = tuple(names)
        observed = {n.rpartition(".")[0] for n in self._obs_names} & self._known
        # The commanded joints' positions feed the shield: they must be fresh too.
        self.observed_joints = tuple(sorted(observed | set(self.config.command_joint_names)))

    @property
    def joint_time_ns(self) -> int | None:
        """When the oldest observed joint was last observed (None while one has never been)."""
        times = [self._joint_ns.get(j) for j in self.observed_joints]
        return None if not times or None in times else min(times)

    def update_joints(self, state: msg.JointState, recv_ns: int, observed_ns: int | None = None) -> bool:
        """Take the positions, velocities and efforts of a JointState's known joints.

        ``observed_ns`` (monotonic) is when the values were measured, from the header stamp;
        default: ``recv_ns``. False (nothing taken) when the message is malformed: a position,
        velocity or effort list that is neither empty nor one value per name.
        """
        n = len(state.name)
        columns = []
        for values in (state.position, state.velocity, state.effort):
            if len(values) not in (0, n):
                return False
            columns.append(values)
        when = recv_ns if observed_ns is None else min(recv_ns, observed_ns)
        for i, name in enumerate(state.name):
            if name not in self._known:
                continue  # only configured joints are kept: unknown names cannot grow memory
            self._joint[name] = tuple(_as_float(col[i]) if col else float("nan") for col in columns)
            self._joint_ns[name] = when
        return True

    def update_vector(self, source: str, data: msg.Float64MultiArray) -> None:
        """Take the elements of a vector source (e.g. the goal); only the configured fields are kept."""
        wanted = len(self._vector_fields.get(source, ()))
        self._vectors[source] = np.array([_as_float(x) for x in list(data.data)[:wanted]], dtype=np.float64)

    def joint_values(self, joints: tuple[str, ...], kind: int) -> np.ndarray:
        """Latest position (0), velocity (1) or effort (2) of some joints (NaN where unknown)."""
        return np.array([self._joint.get(j, (np.nan,) * 3)[kind] for j in joints])

    def vector(self) -> np.ndarray | None:
        """The observation in the policy's order, or None while some source has not arrived."""
        out = np.empty(len(self.obs_names))
        kinds = {"pos": 0, "vel": 1, "eff": 2}
        for i, name in enumerate(self.obs_names):
            head, _, tail = name.rpartition(".")
            if head in self._vector_fields:
                data = self._vectors.get(head)
                k = self._vector_fields[head].index(tail)
                if data is None or len(data) <= k:
                    return None
                out[i] = data[k]
            elif head in self._joint and tail in kinds:
                out[i] = self._joint[head][kinds[tail]]
            else:
                return None
        return out


def _as_float(x) -> float:
    """A received number as a float; anything that is not one becomes NaN (the shield then holds)."""
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


MAX_PENDING_LATENTS = 8
"""Latents held for chunks that have not started yet (older ones are dropped first)."""


class LatentIntake:
    """Steered mode: the learner's latents, accepted only inside the armed adaptation session.

    A latent is refused (``rejected``) when no session is armed, when it names another session, or
    when it cannot run (shape, non-finite, outside ±``bound``: :meth:`steer.robot.spec.LatentChunk.problems`);
    one for a chunk that has already started is ``late``. The node asks :meth:`take_for` at every chunk
    boundary and never waits: no latent there means the baseline's noise (``fallback``).
    """

    def __init__(self, shape: tuple[int, int], bound: float):
        self.shape, self.bound = tuple(shape), float(bound)
        self.session = ""
        self.used = self.late = self.fallback = self.rejected = 0
        self._pending: dict[tuple[str, int], object] = {}

    def arm(self, session: str) -> None:
        """Accept latents of ``session`` from now on (a new session drops the old one's latents)."""
        if session != self.session:
            self._pending.clear()
        self.session = session

    def end(self) -> None:
        """End the session (e-stop): every later latent is refused until a new signed ``adapt_start``."""
        self.session = ""
        self._pending.clear()

    def offer(self, message, episode: str, next_chunk: int) -> None:
        """Take one received latent message; ``episode``/``next_chunk``: the chunk the node queries next."""
        from steer.robot.spec import LatentChunk, WireError

        try:
            latent = LatentChunk.from_message(message)
        except WireError:
            self.rejected += 1
            return
        if not self.session or latent.session != self.session or latent.problems(self.shape, self.bound):
            self.rejected += 1
            return
        if latent.episode == episode and latent.chunk < next_chunk:
            self.late += 1  # its chunk already runs (on the baseline's noise)
            return
        self._pending[(latent.episode, latent.chunk)] = latent
        while len(self._pending) > MAX_PENDING_LATENTS:
            del self._pending[next(iter(self._pending))]

    def take_for(self, episode: str, chunk: int):
        """The latent for this chunk (None: run the baseline's noise, counted as a fallback in a session)."""
        latent = self._pending.pop((episode, chunk), None)
        # Latents for earlier chunks of this episode can no longer run.
        for key in [k for k in self._pending if k[0] == episode and k[1] < chunk]:
            del self._pending[key]
            self.late += 1
        if latent is not None:
            self.used += 1
        elif self.session:
            self.fallback += 1
        return latent
