"""Policy promotion: the operator names a new ONNX policy; the node loads and checks it off its control thread.

A promotion (:class:`~steer.robot.spec.Promotion`: the policy's absolute path, the sha256 of the
file and the source run) arrives as ``diagnostic_msgs/DiagnosticStatus`` on ``<ns>/policy_promote``
(reliable, transient-local). :class:`PolicyLoader` refuses a file whose bytes are not the ones the
operator checked, then builds an :class:`~steer.robot.onnx_policy.OnnxPolicy` with every
runtime check; the node swaps the result in between two ticks, at a chunk boundary.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from steer.robot.config import RobotConfig
from steer.robot.errors import PolicyRefused
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.spec import Promotion


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_promoted(promotion: Promotion, robot: RobotConfig) -> OnnxPolicy:
    """The promoted policy with every runtime check, or PolicyRefused (one sentence) when it cannot run.

    The file is hashed before and after loading, so a file rewritten while it loads is refused
    instead of running bytes that nobody checked.
    """
    where = f"policy {str(promotion.policy)!r}"

    def check_unchanged() -> None:
        try:
            digest = file_sha256(promotion.policy)
        except FileNotFoundError:
            raise PolicyRefused(f"{where} does not exist on the robot; copy it there and promote it again.") \
                from None
        except OSError as err:
            raise PolicyRefused(f"{where} cannot be read ({err.strerror}); fix its permissions and promote it "
                                "again.") from None
        if digest != promotion.sha256:
            raise PolicyRefused(f"{where} changed since it was checked (sha256 {digest[:12]}, promoted "
                                f"{promotion.sha256[:12]}); check it and promote it again.")

    check_unchanged()
    try:
        policy = OnnxPolicy(promotion.policy, robot=robot)
    except PolicyRefused:
        raise
    except Exception as err:  # noqa: BLE001 - anything else a broken file raises is a refusal too
        raise PolicyRefused(f"{where} could not be loaded ({type(err).__name__}: {str(err)[:160]}).") from None
    check_unchanged()
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
    """Loads promoted policies on one background thread; only the newest request counts."""

    def __init__(self, robot: RobotConfig):
        self.robot = robot
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-loader",
                                            initializer=_normal_scheduling)
        self.pending: tuple[Promotion, Future] | None = None

    def submit(self, promotion: Promotion) -> None:
        """Start loading ``promotion``; an earlier request is dropped."""
        self.cancel()
        self.pending = (promotion, self._executor.submit(load_promoted, promotion, self.robot))

    def cancel(self) -> None:
        """Drop the pending request (a load in progress finishes in the background, unused)."""
        if self.pending is not None:
            self.pending[1].cancel()
            self.pending = None

    @property
    def requested(self) -> Promotion | None:
        """The promotion being loaded (None when nothing is pending)."""
        return None if self.pending is None else self.pending[0]

    def ready(self) -> bool:
        """True when a load finished (loaded or refused) and waits to be taken."""
        return self.pending is not None and self.pending[1].done()

    def loaded(self) -> bool:
        """True when a load finished with a policy (not a refusal)."""
        return self.ready() and self.pending[1].exception() is None

    def take(self) -> tuple[Promotion, OnnxPolicy | None, str]:
        """The finished request: (promotion, policy, "") or (promotion, None, why it was refused)."""
        assert self.pending is not None and self.pending[1].done()
        promotion, future = self.pending
        self.pending = None
        try:
            return promotion, future.result(), ""
        except PolicyRefused as err:
            return promotion, None, str(err)
        except Exception as err:  # noqa: BLE001 - a refusal, never a crash of the control loop
            return promotion, None, f"policy {str(promotion.policy)!r} could not be loaded ({type(err).__name__})."

    def close(self) -> None:
        """Stop the thread; a load in progress finishes in the background and is dropped."""
        self.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
