"""Episode bags: each robot episode as a ROS 2 bag (MCAP storage).

The control loop only puts messages on a bounded queue; a background thread serializes
them and writes the episode's bag as they come, so the loop never waits for the disk and
memory stays bounded however much is recorded. When the queue is full, messages are left
out of the bag (counted in ``dropped``). When the disk refuses (full, read-only), the writer
says so once on stderr, keeps the reason in ``error`` (the node reports it in its safety
state) and drops the episode's remaining messages; the next episode tries again. The bag holds
the CDR bytes that went over the wire, so ``rosbags.highlevel.AnyReader``, ``ros2 bag`` and
Foxglove read it as they would a bag recorded on the robot.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from steer.robot import messages

QUEUE_SIZE = 20_000
"""Messages that may wait for the writer thread; more are left out of the bag (counted)."""
CLOSE_TIMEOUT_S = 30.0
"""How long :meth:`EpisodeBagWriter.close` waits for the writer to finish."""


def _rosbags_writer(path: Path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    return Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)


class EpisodeBagWriter:
    """Records observations, commands and safety events, one bag directory per episode.

    ``open_writer(path)`` makes the bag writer (a ``rosbags.rosbag2.Writer``-like object); tests
    pass one that fails the way a full disk does.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "episode", queue_size: int = QUEUE_SIZE,
                 open_writer: Callable[[Path], Any] = _rosbags_writer):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.written: list[Path] = []
        self._dropped_full = 0  # counted by the control loop
        self._dropped_failed = 0  # counted by the writer thread
        self.error = ""
        """Why the last bag could not be written (empty once one is written again)."""
        self._open_writer = open_writer
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._recording = False
        self._closed = False
        # Import and build the type store now, not in the middle of a control loop.
        from rosbags.typesys import Stores, get_typestore

        self._store = get_typestore(Stores.ROS2_JAZZY)
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    # -- control-loop side (never blocks) ----------------------------------------------
    def _put(self, item: tuple) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            return False

    def start_episode(self, index: int) -> None:
        """Finish the current episode's bag and start recording the next one."""
        if self._closed:
            return
        if not self._put(("start", int(index))):
            self._recording = False  # the writer is behind: the episode's messages go unrecorded
            return
        self._recording = True

    def record(self, topic: str, msg: Any, time_ns: int) -> None:
        """Keep one message (wall-clock ``time_ns``) for the current episode's bag."""
        if self._recording and not self._put(("msg", topic, msg, int(time_ns))):
            self._dropped_full += 1

    @property
    def dropped(self) -> int:
        """Messages left out of the bags (queue full, or the episode's bag could not be written)."""
        return self._dropped_full + self._dropped_failed

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until the writer handled everything queued so far (tests; never in a control loop)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout_s)

    def close(self) -> list[Path]:
        """Write every remaining bag and wait (at most ``CLOSE_TIMEOUT_S``) for the writer."""
        if not self._closed:
            self._closed, self._recording = True, False
            try:
                self._queue.put(("stop",), timeout=CLOSE_TIMEOUT_S)
            except queue.Full:
                pass
        self._thread.join(CLOSE_TIMEOUT_S)
        return list(self.written)

    # -- writer thread ---------------------------------------------------------------------
    def _fail(self, err: BaseException) -> None:
        reason = f"cannot write bags to {str(self.out_dir)!r}: {getattr(err, 'strerror', None) or err}"
        if reason != self.error:
            print(f"policy node: {reason}; recording is off for this episode, commands go on.", file=sys.stderr)
        self.error = reason

    def _run(self) -> None:
        writer = path = None
        connections: dict[str, Any] = {}
        index: int | None = None
        failed = False

        def finish() -> None:
            nonlocal writer, failed
            if writer is not None:
                try:
                    writer.close()
                    self.written.append(path)
                    self.error = ""
                except Exception as err:  # noqa: BLE001 - a full disk at close loses this bag, not the node
                    self._fail(err)
            writer, failed = None, False
            connections.clear()

        while True:
            item = self._queue.get()
            try:
                if item[0] == "stop":
                    finish()
                    return
                if item[0] == "start":
                    finish()
                    index = item[1]
                    continue
                if index is None or failed:
                    self._dropped_failed += 1
                    continue
                _, topic, msg, time_ns = item
                try:
                    if writer is None:
                        self.out_dir.mkdir(parents=True, exist_ok=True)
                        path = self.out_dir / f"{self.prefix}_{index:04d}"
                        if path.exists():
                            path = self.out_dir / f"{self.prefix}_{index:04d}_{time_ns}"
                        writer = self._open_writer(path)
                        writer.open()
                    if topic not in connections:
                        connections[topic] = writer.add_connection(topic, messages.ros_name(type(msg)),
                                                                   typestore=self._store)
                    writer.write(connections[topic], time_ns, messages.serialize(msg))
                except Exception as err:  # noqa: BLE001 - the disk refused: say so, drop this episode's rest
                    self._fail(err)
                    self._dropped_failed += 1
                    failed = True
                    if writer is not None:
                        try:
                            writer.close()
                        except Exception:  # noqa: BLE001
                            pass
                        writer = None
            finally:
                self._queue.task_done()
