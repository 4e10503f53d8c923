"""Checkpoints as safetensors + JSON, written atomically, never pickled.

A checkpoint ``<dir>/<name>`` is two files: ``<name>.safetensors`` (all tensors and
numpy arrays, flat keys) and ``<name>.json`` (everything else, including nested
structures such as optimizer states whose tensors are replaced by references into
the safetensors file, and the sha256 of that file). Each file is written to a
temporary name, flushed, fsynced and renamed, and the JSON is written last: a
process killed at any point leaves either the previous checkpoint or the new one,
and a torn pair is detected by the hash.
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
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint that is missing, torn or does not match what loads it."""

    user_facing = True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def save_checkpoint(directory: Path, name: str, state: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save a nested ``state`` (tensors, arrays, numbers, lists, dicts) as ``directory/name``."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, "s", tensors)
    st_path = directory / f"{name}.safetensors"
    # safetensors refuses tensors that share storage (views, tied weights): give each its own.
    blob = save_tensors({k: v.clone() for k, v in tensors.items()})
    atomic_write_bytes(st_path, blob)
    doc = {"format": "steer.checkpoint/1", "meta": meta or {}, "state": structure,
           "safetensors_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(directory / f"{name}.json", doc)
    return directory / f"{name}.json"


def load_checkpoint(directory: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, meta)`` saved by :func:`save_checkpoint`; raises CheckpointError when torn or missing."""
    directory = Path(directory)
    json_path, st_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not json_path.exists() or not st_path.exists():
        raise CheckpointError(f"no checkpoint {name!r} in {directory} (expected {json_path.name} and {st_path.name}).")
    try:
        doc = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{json_path} is not valid JSON ({err}); the checkpoint is damaged.") from err
    if doc.get("format") != "steer.checkpoint/1":
        raise CheckpointError(f"{json_path} is not a steer checkpoint.")
    if sha256_file(st_path) != doc["safetensors_sha256"]:
        raise CheckpointError(f"{st_path} does not match the hash in {json_path.name}; the checkpoint is torn.")
    tensors = load_file(str(st_path))
    return _unflatten(doc["state"], tensors), doc.get("meta", {})


__all__ = ["CheckpointError", "atomic_write_bytes", "atomic_write_json", "load_checkpoint", "save_checkpoint",
           "sha256_file"]
