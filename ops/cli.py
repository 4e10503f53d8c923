"""The ``steer`` command line.

Every command is a function that takes one frozen dataclass config; tyro turns the
dataclass (and its field docstrings) into that command's ``--help``. Commands are
imported lazily from the registry below, so ``steer robot run`` on a robot never
imports torch and ``steer --help`` answers instantly.
"""

from __future__ import annotations

import errno
import importlib
import sys
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One leaf of the command tree."""

    target: str
    """``module:function``; the function takes one dataclass config."""
    summary: str
    """One line for ``steer --help``."""
    example: str
    """A command line a user can paste."""


COMMANDS: dict[str, Command] = {
    "demo": Command("steer.ops.demo:demo", "the whole DSRL path on the default task: demos, BC, DSRL, report",
                    "steer demo --out runs/demo"),
    "collect": Command("steer.ops.train_cmd:collect", "record scripted-expert demonstrations as a dataset",
                       "steer collect --episodes 200 --out runs/data/push"),
    "bc": Command("steer.ops.train_cmd:bc", "train a BC diffusion policy on a dataset",
                  "steer bc --data runs/data/push --name bc-push"),
    "dsrl": Command("steer.ops.train_cmd:dsrl", "adapt a BC diffusion policy with RL over its latent noise",
                    "steer dsrl --policy runs/bc-push --name dsrl-push\n"
                    "  steer dsrl --policy runs/bc-push --name dsrl-robot --robot  # gate, shield and safe set"),
    "adapt": Command("steer.ops.adapt_cmd:adapt", "adapt a BC policy on a robot: DSRL learner over ROS 2 topics",
                     "steer adapt --policy runs/bc-push --domain-id 7 --name adapt-push\n"
                     "  steer adapt --policy runs/bc-push --domain-id 7 --name adapt-push --resume  # after a kill"),
    "eval": Command("steer.ops.train_cmd:evaluate", "evaluate a BC or DSRL run on held-out seeds",
                    "steer eval runs/dsrl-push --episodes 100"),
    "export": Command("steer.ops.export_cmd:export", "export a trained policy to one ONNX file",
                      "steer export runs/dsrl-push --out policy.onnx"),
    "drive view": Command("steer.ops.drive_cmd:view", "render a driving episode to PNG frames and a GIF",
                          "steer drive view --out runs/view --seed 3\n"
                          "  steer drive view --policy runs/carl  # says which infraction ended the episode"),
    "drive train": Command("steer.ops.drive_cmd:train", "train a CaRL PPO driving policy",
                           "steer drive train --name carl\n"
                           "  steer drive train --name carl-lag --ppo.lagrangian.enabled  # PPO-Lag on infractions"),
    "drive eval": Command("steer.ops.drive_cmd:evaluate", "evaluate a driving policy on held-out routes",
                          "steer drive eval runs/carl\n"
                          "  steer drive eval --driver expert --town-size 4 --traffic 12"),
    "robot sim": Command("steer.ops.robot_cmd:sim", "run the simulated robot over ROS 2 topics (DDS)",
                         "steer robot sim --domain-id 7"),
    "robot run": Command("steer.ops.robot_cmd:run", "run an ONNX policy node over ROS 2 topics (DDS)",
                         "steer robot run --policy policy.onnx --domain-id 7\n"
                         "  steer robot run --policy bc.onnx --domain-id 7 --steered  # noise from steer adapt"),
    "console": Command("steer.ops.console_cmd:console", "the operator console (Textual)", "steer console"),
    "keys init": Command("steer.ops.keys_cmd:init", "create the operator key pair that signs release, arm and promote",
                         "steer keys init --dir ~/.config/steer"),
}


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""Errors of the disk or the file system (not of steer) that a user fixes: full, read-only, not theirs."""


def write_error(err: OSError) -> str:
    """One sentence for a file-system error: what could not be written and what to do."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full: cannot write{where}; free some space (or choose another folder) and run again."
    if err.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only; choose a writable folder."
    return f"cannot write{where}: permission denied; choose a folder you can write to."


def _usage() -> str:
    width = max(len(k) for k in COMMANDS) + 2
    lines = ["usage: steer COMMAND [ARGS]  (steer COMMAND --help for its options)", "", "commands:"]
    for name, cmd in COMMANDS.items():
        lines.append(f"  {name:<{width}}{cmd.summary}")
    lines += ["", "examples:"] + [f"  {c.example}" for c in COMMANDS.values()][:6]
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, Command, list[str]] | None:
    for depth in (2, 1):
        name = " ".join(argv[:depth])
        if len(argv) >= depth and name in COMMANDS:
            return name, COMMANDS[name], argv[depth:]
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``steer`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    found = _resolve(argv)
    if found is None:
        groups = sorted({k.split()[0] for k in COMMANDS if " " in k})
        if argv[0] in groups:
            subs = [k for k in COMMANDS if k.startswith(argv[0] + " ")]
            print(f"steer {argv[0]}: choose one of: " + ", ".join(subs), file=sys.stderr)
        else:
            print(f"steer: unknown command {argv[0]!r}; run `steer --help` for the list.", file=sys.stderr)
        return 2
    name, cmd, rest = found
    module_name, func_name = cmd.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("steer."):
            print(f"steer {name}: this command is not available in this build ({err.name} is missing).",
                  file=sys.stderr)
            return 2
        print(f"steer {name}: needs the Python package {err.name!r}; install steer-rl with the matching "
              f"extra (e.g. pip install 'steer-rl[all]').", file=sys.stderr)
        return 2
    func = getattr(module, func_name)
    import tyro

    description = textwrap.dedent(func.__doc__ or cmd.summary).strip() + f"\n\nexample:\n  {cmd.example}"
    import typing

    hints = typing.get_type_hints(func)
    config_type = next(v for k, v in hints.items() if k != "return")
    from steer.ops.options import check_options

    # tyro reports a config's own __post_init__ ValueError (options that contradict each other), exit 2
    config = tyro.cli(config_type, args=rest, prog=f"steer {name}", description=description)
    try:
        check_options(config)  # every numeric option in range before the command creates anything
        result = func(config)
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        print(f"steer {name}: {write_error(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - user-caused errors become one sentence, the rest a traceback
        if not getattr(err, "user_facing", False):  # each package marks its own error classes user_facing = True
            raise
        print(f"steer {name}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steer {name}: interrupted; the run can continue with --resume.", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
