"""Checkpoints as safetensors + JSON, written atomically, never pickled.

A checkpoint ``<dir>/<name>`` is ``<name>.safetensors``: all tensors and numpy arrays
under flat keys, and in its header the JSON document with everything else (nested
structures such as optimizer states, whose tensors are replaced by references, the
metadata, and a digest of the tensors). It is written to a temporary name, flushed,
fsynced and renamed, so one rename commits a checkpoint: a process killed at any
point leaves the previous checkpoint or the new one, never a mix. ``<name>.json``
beside it is a readable copy of the same document for people and tools, written
after; loading never depends on it. Damaged tensor data is detected by the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

_DOC_KEY = "steer.checkpoint"
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint that is missing, torn or does not match what loads it."""

    user_facing = True


def process_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere: set and restore (another thread creating a file in between would get umask 0o077).
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The file gets ``mode``, by default what ``open()`` would give it (0o666 less the umask):
    the temporary file is private (0o600) while it is written, and artifacts such as ONNX
    files and run records must stay readable by whoever the umask allows (a robot node
    running as another user).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor/array in a nested structure by a reference; collect them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj))
        return {_NDARRAY: prefix}
    if isinstance(obj, dict):
        # JSON keys are strings: keep the original key type so optimizer states (int keys) load back.
        return {"__dict__": [[k, _flatten(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _NDARRAY in obj:
            return tensors[obj[_NDARRAY]].numpy()
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    return obj


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over keys, dtypes, shapes and bytes of ``tensors`` in key order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(directory: Path, name: str, state: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save a nested ``state`` (tensors, arrays, numbers, lists, dicts) as ``directory/name``."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, "s", tensors)
    # safetensors refuses tensors that share storage (views, tied weights): give each its own.
    tensors = {k: v.clone() for k, v in tensors.items()}
    doc = {"format": "steer.checkpoint/1", "meta": meta or {}, "state": structure,
           "tensor_digest": tensor_digest(tensors)}
    atomic_write_bytes(directory / f"{name}.safetensors", save_tensors(tensors, metadata={_DOC_KEY: json.dumps(doc)}))
    atomic_write_json(directory / f"{name}.json", doc)
    return directory / f"{name}.safetensors"


def load_checkpoint(directory: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, meta)`` saved by :func:`save_checkpoint`; raises CheckpointError when damaged or missing."""
    st_path = Path(directory) / f"{name}.safetensors"
    if not st_path.exists():
        raise CheckpointError(f"no checkpoint {name!r} in {directory} (expected {st_path.name}).")
    try:
        with safe_open(str(st_path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if _DOC_KEY not in header:
            return _load_legacy(st_path, tensors)
        doc = json.loads(header[_DOC_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{st_path} is not a steer checkpoint (its header document is not JSON).") from None
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise CheckpointError(f"{st_path} cannot be read ({err}); the checkpoint is damaged.") from None
    if doc.get("format") != "steer.checkpoint/1":
        raise CheckpointError(f"{st_path} is not a steer checkpoint.")
    if tensor_digest(tensors) != doc["tensor_digest"]:
        raise CheckpointError(f"{st_path} does not match its own digest; the checkpoint is damaged.")
    return _unflatten(doc["state"], tensors), doc.get("meta", {})


def _load_legacy(st_path: Path, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checkpoints written before the document moved into the header: a JSON beside them with the file's hash."""
    json_path = st_path.with_suffix(".json")
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise CheckpointError(f"{st_path} is not a steer checkpoint (no document in its header).") from None
    if sha256_file(st_path) != doc.get("safetensors_sha256"):
        raise CheckpointError(f"{st_path} does not match the hash in {json_path.name}; the checkpoint is torn.")
    return _unflatten(doc["state"], tensors), doc.get("meta", {})


def read_meta(directory: Path, name: str) -> dict[str, Any]:
    """The ``meta`` of a checkpoint, read from its header without loading any tensor ({} when unreadable)."""
    try:
        with safe_open(str(Path(directory) / f"{name}.safetensors"), framework="pt") as f:
            header = f.metadata() or {}
        if _DOC_KEY in header:
            return json.loads(header[_DOC_KEY]).get("meta", {})
        return json.loads((Path(directory) / f"{name}.json").read_text()).get("meta", {})
    except Exception:  # noqa: BLE001 - a missing or foreign file simply has no steer meta
        return {}


__all__ = ["CheckpointError", "atomic_write_bytes", "atomic_write_json", "load_checkpoint", "process_umask",
           "save_checkpoint", "read_meta", "sha256_file", "tensor_digest"]
