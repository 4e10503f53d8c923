"""Benchmark: a policy node under hostile DDS traffic (≥ 10⁵ random and malformed messages).

The node runs as its own process, as ``steer robot run`` starts it, on the PlanarPush robot
config with a low rate limit (so it binds on most ticks); a well-behaved robot streams joint
states at 20 Hz from this process while :func:`steer.robot.fuzz.run_fuzz` sends random and
malformed messages on every topic the node subscribes to (joint states, goal, e-stop, e-stop
reset, episode, promotion, and signed operator commands where the node takes them). Figures:

* ``messages``: hostile messages sent; ``crashes``: runs where the node died;
* ``out_of_limit``: commands received outside the velocity limits (or non-finite);
* ``max_slope_ratio``: steepest |Δcommand| / (Δt · rate limit) between consecutive commands in the
  node's bags (steps only towards zero, i.e. stops, are left out); ≤ 1/(1 - 0.05) by design;
* ``rss_growth_mb``: the node's resident memory growth during the run;
* ``unauthenticated_state_changes``: changes of mode (other than stops), arming or active policy
  that a hostile message caused.

    python bench/robot_fuzz.py                     # 10^5 messages
    python bench/robot_fuzz.py --messages 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from benchlib import machine
from robot_loop import _policy

RESULTS = Path(__file__).resolve().parent / "results" / "robot_fuzz.json"


def main() -> int:
    from steer.robot.dds_transport import use_loopback_config
    from steer.robot.fuzz import run_fuzz

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="hostile messages to send")
    parser.add_argument("--domain", type=int, default=231, help="DDS domain id of the benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1.")
    use_loopback_config()
    work = Path(tempfile.mkdtemp(prefix="steer-bench-robot-fuzz-"))
    result = run_fuzz(_policy(work, rate_hz=20.0), work / "run", args.domain, messages=args.messages,
                      seed=args.seed, env=dict(os.environ))
    figures, details = result["figures"], result["details"]
    print(f"\npolicy node under {figures['messages']} hostile messages over DDS "
          f"({details['fuzz_seconds']:.0f} s, {figures['messages'] / details['fuzz_seconds']:.0f} msg/s)")
    for key, value in figures.items():
        print(f"{key:<34}{value:>12.3f}")
    stderr = details.pop("node_stderr_tail")
    if figures["crashes"]:
        print(stderr, file=sys.stderr)
    details["node_stats"]["bags"] = len(details["node_stats"].get("bags", []))  # a count, not temp paths
    details["state_changes"] = details["state_changes"][:20]  # the first few (mode, policy sha256, armed)
    out = {"figures": figures,
           "details": details | {"goal": "crashes == 0, out_of_limit == 0, max_slope_ratio <= 1.053, "
                                         "unauthenticated_state_changes == 0"},
           "machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
