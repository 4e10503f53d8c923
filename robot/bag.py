"""Episode bags: each robot episode as a ROS 2 bag (MCAP storage).

Messages are kept in memory during the episode and written by a background thread
when it ends, so the control loop never waits for the disk. The bag holds the CDR bytes that went over
the wire, so ``rosbags.highlevel.AnyReader``, ``ros2 bag`` and Foxglove read it as
they would a bag recorded on the robot.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer.robot import messages


@dataclass
class _Episode:
    index: int
    records: list[tuple[str, type, int, bytes]] = field(default_factory=list)


class EpisodeBagWriter:
    """Records observations, commands and safety events, one bag directory per episode."""

    def __init__(self, out_dir: str | Path, prefix: str = "episode"):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.written: list[Path] = []
        self._episode: _Episode | None = None
        self._pending: list[Future] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-writer")
        # Import and build the type store now, not in the middle of a control loop.
        from rosbags.typesys import Stores, get_typestore

        self._store = get_typestore(Stores.ROS2_JAZZY)

    def start_episode(self, index: int) -> None:
        """Hand the current episode's bag to the writer thread and start recording the next one."""
        self._finish()
        self._episode = _Episode(index)

    def record(self, topic: str, msg: Any, time_ns: int) -> None:
        """Keep one message (wall-clock ``time_ns``) for the current episode's bag."""
        if self._episode is not None:
            self._episode.records.append((topic, type(msg), time_ns, messages.serialize(msg)))

    def _finish(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None and episode.records:
            self._pending.append(self._pool.submit(self._write, episode))

    def close(self) -> list[Path]:
        """Write every remaining bag and wait for the writer; returns all bag directories written."""
        self._finish()
        for future in self._pending:
            future.result()
        self._pending.clear()
        return list(self.written)

    def _write(self, episode: _Episode) -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer

        store = self._store
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.prefix}_{episode.index:04d}"
        if path.exists():
            path = self.out_dir / f"{self.prefix}_{episode.index:04d}_{episode.records[0][2]}"
        with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connections: dict[str, Any] = {}
            for topic, msg_type, time_ns, data in episode.records:
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, messages.ros_name(msg_type), typestore=store)
                writer.write(connections[topic], time_ns, data)
        self.written.append(path)
        return path
