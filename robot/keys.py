"""Operator keys and signed commands: anyone can stop a robot, only an operator can start it.

An e-stop needs no signature. Releasing it, arming, promoting a policy and starting an
adaptation session need a :class:`~steer.robot.spec.OperatorCommand` (its wire form is in
:mod:`steer.robot.spec`): an Ed25519 signature by a key that the
robot's config trusts, over the command, the robot namespace, the policy's sha256, a
timestamp and a random nonce. :class:`CommandVerifier` refuses unsigned, wrongly signed,
foreign, stale and replayed commands. Its refusals say what was wrong with the *message*,
never anything about files on the robot.

Keys on disk: ``steer keys init`` writes ``operator_ed25519`` (PKCS#8 PEM, mode 0600) and
``operator_ed25519.pub`` (one line: ``ed25519 <64 hex> <comment>``). A robot config lists
the public keys it trusts as those 64-hex strings (``trusted_operator_keys``).
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from steer.robot.errors import RobotError
from steer.robot.spec import SIGNED_COMMANDS, OperatorCommand

DEFAULT_KEY_DIR = Path("~/.config/steer").expanduser()
PRIVATE_KEY_NAME = "operator_ed25519"


class CommandRefused(RobotError):
    """A command that needs an operator's signature was refused; the message says why."""


def public_key_hex(key: Ed25519PublicKey) -> str:
    """The 64-hex raw form a robot config lists under ``trusted_operator_keys``."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def key_id(public_hex: str) -> str:
    """A short name for a public key (its first 16 hex digits)."""
    return public_hex[:16]


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its 64-hex form or a ``.pub`` line (``ed25519 <hex> [comment]``)."""
    parts = text.strip().split()
    hexkey = parts[1] if len(parts) >= 2 and parts[0] == "ed25519" else (parts[0] if parts else "")
    try:
        raw = bytes.fromhex(hexkey)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise RobotError(f"{text.strip()[:80]!r} is not an Ed25519 public key; "
                         "use the 64-hex line of an operator_ed25519.pub file.") from None


def init_keys(directory: Path = DEFAULT_KEY_DIR, comment: str = "", overwrite: bool = False) -> tuple[Path, Path]:
    """Create an operator key pair in ``directory``: the private key 0600, the public key beside it.

    Refuses to replace an existing key unless ``overwrite``: losing it locks the operator out of
    every robot that trusts it.
    """
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / PRIVATE_KEY_NAME
    public_path = directory / (PRIVATE_KEY_NAME + ".pub")
    if private_path.exists() and not overwrite:
        raise RobotError(f"{private_path} exists; pass --overwrite to replace it "
                         "(robots that trust the old key will refuse the new one).")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = private_path.with_name(f".{PRIVATE_KEY_NAME}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, private_path)
    public_path.write_text(f"ed25519 {public_key_hex(key.public_key())} {comment}".rstrip() + "\n")
    return private_path, public_path


def load_private_key(path: Path = DEFAULT_KEY_DIR / PRIVATE_KEY_NAME) -> Ed25519PrivateKey:
    """The operator's private key; one sentence when it is missing, unreadable or readable by others."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise RobotError(f"cannot read the operator key {path} ({e.strerror}); "
                         "create one with `steer keys init`.") from None
    if mode & 0o077:
        raise RobotError(f"the operator key {path} is readable by other users; run `chmod 600 {path}`.")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise RobotError(f"{path} is not an unencrypted PEM private key; create one with `steer keys init`.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RobotError(f"{path} is not an Ed25519 key; create one with `steer keys init`.")
    return key


def sign_command(key: Ed25519PrivateKey, command: str, namespace: str, policy_sha256: str = "",
                 args: dict[str, str] | None = None, now: float | None = None) -> OperatorCommand:
    """A command signed by ``key``, fresh (now) and unique (a random nonce)."""
    if command not in SIGNED_COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {SIGNED_COMMANDS}")
    unsigned = OperatorCommand(command=command, namespace=namespace, policy_sha256=policy_sha256.lower(),
                             timestamp=time.time() if now is None else float(now), nonce=secrets.token_hex(16),
                             args=dict(args or {}), key_id=key_id(public_key_hex(key.public_key())))
    return replace(unsigned, signature=key.sign(unsigned.payload()).hex())


class CommandVerifier:
    """The robot's check of operator commands: trusted key, right robot, fresh, never seen before.

    ``max_age_s`` bounds how old (or, for clock skew, how far in the future) a command may be;
    nonces are remembered for that long, at most ``max_nonces`` of them (memory stays bounded:
    when full, new commands are refused until old nonces expire).
    """

    def __init__(self, trusted_keys: Iterable[str], namespace: str, max_age_s: float = 30.0,
                 clock: Callable[[], float] = time.time, max_nonces: int = 4096):
        self.trusted: dict[str, Ed25519PublicKey] = {}
        for text in trusted_keys:
            pub = parse_public_key(text)
            self.trusted[key_id(public_key_hex(pub))] = pub
        self.namespace = namespace
        self.max_age_s = float(max_age_s)
        self.clock = clock
        self.max_nonces = int(max_nonces)
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> timestamp, oldest first

    def verify(self, cmd: OperatorCommand, command: str, policy_sha256: str | None = None) -> OperatorCommand:
        """Return ``cmd`` if it is a valid, fresh ``command`` for this robot, else raise CommandRefused."""
        if not self.trusted:
            raise CommandRefused(f"{command} refused: this robot trusts no operator key "
                                 "(list one under trusted_operator_keys in its config).")
        if not cmd.signature:
            raise CommandRefused(f"{command} refused: the command is not signed.")
        pub = self.trusted.get(cmd.key_id)
        if pub is None:
            raise CommandRefused(f"{command} refused: not signed by a key this robot trusts.")
        try:
            pub.verify(bytes.fromhex(cmd.signature), cmd.payload())
        except (InvalidSignature, ValueError):
            raise CommandRefused(f"{command} refused: the signature does not match the command.") from None
        if cmd.command != command:
            raise CommandRefused(f"{command} refused: the signature is for {cmd.command!r}.")
        if cmd.namespace != self.namespace:
            raise CommandRefused(f"{command} refused: the command is for another robot.")
        if policy_sha256 is not None and cmd.policy_sha256 != policy_sha256.lower():
            raise CommandRefused(f"{command} refused: the command names another policy than the one here.")
        now = self.clock()
        if abs(now - cmd.timestamp) > self.max_age_s:
            when = (f"{now - cmd.timestamp:.0f} s ago" if now >= cmd.timestamp
                    else f"{cmd.timestamp - now:.0f} s in the future")
            raise CommandRefused(f"{command} refused: the command is stale (signed {when}; the window is "
                                 f"{self.max_age_s:g} s); check both clocks.")
        self._expire(now)
        if cmd.nonce in self._seen:
            raise CommandRefused(f"{command} refused: replayed (this command was already used).")
        if len(self._seen) >= self.max_nonces:
            raise CommandRefused(f"{command} refused: too many commands in {self.max_age_s:g} s; try again shortly.")
        self._seen[cmd.nonce] = cmd.timestamp
        return cmd

    def _expire(self, now: float) -> None:
        # Nonces older than the window can be forgotten: their commands are refused as stale anyway.
        while self._seen:
            nonce, ts = next(iter(self._seen.items()))
            if now - ts <= self.max_age_s:
                # Timestamps arrive nearly in order; a late-ordered old one is evicted on a later call.
                break
            del self._seen[nonce]
