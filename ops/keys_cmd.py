"""``steer keys init``: create the operator key pair that signs release, arm and promote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steer.robot.keys import DEFAULT_KEY_DIR


@dataclass(frozen=True)
class KeysInitConfig:
    """Options of ``steer keys init``."""

    dir: Path = DEFAULT_KEY_DIR
    """Directory of the key pair (operator_ed25519, mode 0600, and operator_ed25519.pub)."""
    overwrite: bool = False
    """Replace an existing key (robots that trust the old key will refuse commands signed by the new one)."""
    comment: str = ""
    """Comment at the end of the public-key line (e.g. your name; default: user@host)."""


def init(cfg: KeysInitConfig) -> int:
    """Create an operator key pair and print the public-key line to paste under a robot config's
    trusted_operator_keys."""
    import getpass
    import socket

    from steer.robot.keys import init_keys

    comment = cfg.comment or f"{getpass.getuser()}@{socket.gethostname()}"
    private, public = init_keys(cfg.dir, comment=comment, overwrite=cfg.overwrite)
    line = public.read_text().strip()
    print(f"private key: {private} (mode 0600; keep it secret)")
    print(f"public key:  {public}")
    print("paste this into the robot config (under trusted_operator_keys):")
    print(f'  - "{line}"')
    return 0
