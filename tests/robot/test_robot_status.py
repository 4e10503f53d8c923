"""The one-line status that ``steer robot sim`` and ``steer robot run`` print while they run."""

import io
import time

from steer.robot.processes import StatusPrinter, sim_status_line
from steer.robot.sim_robot import EpisodeResult, SimStats


def test_sim_status_line_counts_episodes_and_successes():
    stats = SimStats(latencies_ns=[1_000_000, 3_000_000, 2_000_000], late_steps=4, held_steps=1)
    assert sim_status_line(stats) == ("sim robot: episodes 0 · success - · latency p50 2.0 ms · late steps 4 "
                                      "· held steps 1")
    stats.episodes += [EpisodeResult(episode=i, seed=i, success=i != 1, ret=0.0, steps=10, late_steps=0, held_steps=0)
                       for i in range(3)]
    assert sim_status_line(stats).startswith("sim robot: episodes 3 · success 2/3 · ")


def test_status_printer_prints_at_its_period_and_passes_the_stop_check_through():
    out = io.StringIO()
    calls = []
    printer = StatusPrinter(lambda: calls.append(1) or f"line {len(calls)}", every_s=0.05, out=out)
    end = time.monotonic() + 0.32
    while time.monotonic() < end:
        assert printer() is False  # no stop signal
        time.sleep(0.001)
    assert 4 <= len(calls) <= 7 and out.getvalue().splitlines()[:2] == ["line 1", "line 2"]
    silent = StatusPrinter(lambda: "never", every_s=0, out=out)
    assert silent() is False and "never" not in out.getvalue()
