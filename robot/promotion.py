"""Policy promotion: a signed ``promote`` names a file in the robot's policies directory; the node loads
and checks it off its control thread.

A promotion arrives as a signed :class:`~steer.robot.spec.OperatorCommand` (``promote``, with
``args["policy"]``: a file name relative to the robot config's ``policies_dir``, and the file's sha256
as the signed ``policy_sha256``). :class:`PolicyLoader` reads it on a background thread, with a time
limit, and only if it is a regular file inside the policies directory (no symlink out of it, no device
or FIFO) of at most ``max_policy_bytes``, whose bytes hash to the signed sha256 and whose spec's weights
hash is the graph inside it. The checked bytes are what onnxruntime loads: nothing is read twice.

Every refusal about the file is the same sentence (:data:`NOT_AVAILABLE`), so the robot's public safety
state never says whether a file exists, what kind it is, how big it is or what it hashes to.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from steer.robot.config import RobotConfig
from steer.robot.errors import PolicyRefused
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.spec import WireError, graph_sha256

LOAD_TIMEOUT_S = 10.0
"""A promotion whose file is not read, checked and loaded within this time is refused."""

NOT_AVAILABLE = ("promote refused: the policies directory holds no regular policy file of that name, within "
                 "the size limit, whose sha256 is the signed one; copy the file there and sign it again.")
"""The one refusal for anything about the file itself (missing, outside, a link out, not a regular file,
too big, unreadable, other bytes): it reveals nothing about what is on the robot's disk."""


@dataclass(frozen=True)
class PromotionRequest:
    """What a verified ``promote`` asks for."""

    policy: str
    """File name relative to the policies directory (as signed)."""
    sha256: str
    """sha256 of the file, as signed."""


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_policy_file(robot: RobotConfig, name: str, sha256: str) -> tuple[Path, bytes]:
    """The resolved path and bytes of policy ``name`` in the policies directory, or PolicyRefused.

    Refuses, with :data:`NOT_AVAILABLE`, anything but a regular file inside the directory (after
    resolving links) of at most ``max_policy_bytes`` whose bytes hash to ``sha256``. The file is
    opened without following a final link and without blocking (a FIFO opens at once and is then
    refused as not regular), and its type is checked on the open descriptor, so ``/dev/zero`` is
    refused before a byte is read.
    """
    base = robot.policies_path
    if base is None:
        raise PolicyRefused("promote refused: this robot has no policies_dir in its config.")
    if not name or "\x00" in name or Path(name).is_absolute():
        raise PolicyRefused(NOT_AVAILABLE)
    try:
        target = (base / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise PolicyRefused(NOT_AVAILABLE) from None
    if target == base or not target.is_relative_to(base):
        raise PolicyRefused(NOT_AVAILABLE)
    limit = robot.max_policy_bytes
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise PolicyRefused(NOT_AVAILABLE) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise PolicyRefused(NOT_AVAILABLE)
        chunks, size = [], 0
        while size <= limit:  # the file may grow after fstat: never read more than the limit + 1
            block = os.read(fd, min(1 << 20, limit + 1 - size))
            if not block:
                break
            chunks.append(block)
            size += len(block)
    except OSError:
        raise PolicyRefused(NOT_AVAILABLE) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit or hashlib.sha256(data).hexdigest() != sha256.lower():
        raise PolicyRefused(NOT_AVAILABLE)
    return target, data


def load_promoted(request: PromotionRequest, robot: RobotConfig) -> OnnxPolicy:
    """The promoted policy with every runtime check, or PolicyRefused (one sentence) when it cannot run."""
    path, data = read_policy_file(robot, request.policy, request.sha256)
    try:
        graph = graph_sha256(data)
    except WireError:
        raise PolicyRefused("promote refused: the signed file is not an ONNX model; export it again.") from None
    try:
        policy = OnnxPolicy(path, robot=robot, model_bytes=data)
    except PolicyRefused:
        raise
    except Exception as err:  # noqa: BLE001 - anything else a broken file raises is a refusal too
        raise PolicyRefused(f"promote refused: the signed file could not be loaded ({type(err).__name__}).") from None
    if policy.spec.weights_sha256.lower() != graph:
        raise PolicyRefused("promote refused: the policy's spec names other weights than the graph it holds "
                            "(weights_sha256 does not match); export it again with `steer export`.")
    return policy


def _normal_scheduling() -> None:
    # The loader thread inherits the control loop's SCHED_FIFO (when the node has it); a load must
    # not hold a core against the robot's own loops, so it runs under the normal scheduler. It is
    # not niced below the control thread: it shares the GIL with it, and a starved thread holding
    # the GIL would stall a tick (priority inversion).
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


class PolicyLoader:
    """Loads promoted policies on background threads, each with a time limit; only the newest request counts.

    Each load runs on its own daemon thread: a load stuck in a read can neither hold up the next
    promotion nor keep the process from exiting.
    """

    def __init__(self, robot: RobotConfig, timeout_s: float = LOAD_TIMEOUT_S, clock=time.monotonic):
        self.robot = robot
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.pending: tuple[PromotionRequest, Future, float] | None = None

    def submit(self, request: PromotionRequest) -> None:
        """Start loading ``request``; an earlier request is dropped."""
        self.cancel()
        future: Future = Future()

        def work() -> None:
            _normal_scheduling()
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(load_promoted(request, self.robot))
            except BaseException as err:  # noqa: BLE001 - delivered to the node as a refusal
                future.set_exception(err)

        self.pending = (request, future, self.clock())
        threading.Thread(target=work, name="policy-loader", daemon=True).start()

    def cancel(self) -> None:
        """Drop the pending request (a load in progress finishes in the background, unused)."""
        if self.pending is not None:
            self.pending[1].cancel()
            self.pending = None

    @property
    def requested(self) -> PromotionRequest | None:
        """The promotion being loaded (None when nothing is pending)."""
        return None if self.pending is None else self.pending[0]

    def _timed_out(self) -> bool:
        return self.pending is not None and self.clock() - self.pending[2] > self.timeout_s

    def ready(self) -> bool:
        """True when a load finished (loaded or refused) or ran out of time, and waits to be taken."""
        return self.pending is not None and (self.pending[1].done() or self._timed_out())

    def loaded(self) -> bool:
        """True when a load finished with a policy (not a refusal)."""
        return self.ready() and self.pending[1].done() and self.pending[1].exception() is None

    def take(self) -> tuple[PromotionRequest, OnnxPolicy | None, str]:
        """The finished request: (request, policy, "") or (request, None, why it was refused)."""
        assert self.ready()
        request, future, _ = self.pending
        self.pending = None
        if not future.done():
            future.cancel()
            return request, None, (f"promote refused: reading and checking the file took longer than "
                                   f"{self.timeout_s:g} s.")
        try:
            return request, future.result(), ""
        except PolicyRefused as err:
            return request, None, str(err)
        except Exception as err:  # noqa: BLE001 - a refusal, never a crash of the control loop
            return request, None, f"promote refused: the signed file could not be loaded ({type(err).__name__})."

    def close(self) -> None:
        """Drop the pending request; a load in progress finishes on its daemon thread, unused."""
        self.cancel()
