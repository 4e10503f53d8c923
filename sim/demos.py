"""Demonstration datasets: collect with a scripted expert, store as Minari, load back.

Format: a Minari dataset (HDF5 backend, Farama's standard for offline RL data) in a
folder of the run. Each episode holds ``observations`` (T+1, obs_dim),
``actions`` (T, action_dim), ``rewards``, ``terminations``, ``truncations`` and
``infos/is_success``. The env id, observation and action spaces are recorded in the
dataset metadata, so a loader can check that it matches the task it trains for.
Nothing is downloaded: ``MINARI_DATASETS_PATH`` points at the run's own folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gymnasium as gym
import numpy as np
from tqdm import tqdm

DATASET_ID = "steer/planarpush-expert-v0"
"""Dataset id of PlanarPush demonstrations (see :func:`dataset_id`)."""


def dataset_id(env_id: str) -> str:
    """Minari id of the scripted demonstrations of ``env_id``: ``steer/<task>-expert-v0``."""
    name = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    return f"steer/{name}-expert-v0"


class DatasetError(ValueError):
    """A dataset that is missing, unreadable or does not fit the task."""

    user_facing = True


@dataclass
class Demos:
    """Demonstrations in memory: one array per episode."""

    observations: list[np.ndarray]
    """Per episode, (T+1, obs_dim) float32."""
    actions: list[np.ndarray]
    """Per episode, (T, action_dim) float32."""
    successes: np.ndarray
    """Per episode, whether it ended in success."""
    env_id: str

    @property
    def num_steps(self) -> int:
        return int(sum(len(a) for a in self.actions))


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    # Minari joins a relative root with paths that already contain it: always pass an absolute one.
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def collect_demos(env_id: str, expert, episodes: int, seed: int, out_dir: Path,
                  progress: bool = True) -> Demos:
    """Roll out ``expert`` for ``episodes`` episodes and write a Minari dataset to ``out_dir``.

    Episode ``i`` is reset with seed ``seed + i``; ``expert`` has ``start_episode()`` and
    ``act(obs)``.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id)
    buffers, demos_obs, demos_act, succ = [], [], [], []
    for i in tqdm(range(episodes), desc="collect", unit="ep", disable=not progress):
        obs, info = env.reset(seed=seed + i)
        expert.start_episode()
        observations, actions, rewards, terms, truncs, successes = [obs], [], [], [], [], [info["is_success"]]
        while True:
            action = expert.act(obs)
            obs, reward, term, trunc, info = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            terms.append(bool(term))
            truncs.append(bool(trunc))
            successes.append(bool(info["is_success"]))
            if term or trunc:
                break
        obs_arr, act_arr = np.asarray(observations, np.float32), np.asarray(actions, np.float32)
        buffers.append(EpisodeBuffer(id=i, seed=seed + i, observations=obs_arr, actions=act_arr,
                                     rewards=rewards, terminations=terms, truncations=truncs,
                                     infos={"is_success": np.asarray(successes)}))
        demos_obs.append(obs_arr)
        demos_act.append(act_arr)
        succ.append(successes[-1])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # h5py does not survive a full disk mid-write (errors in its destructors, then a crash): check first.
    need = 2 * sum(o.nbytes + a.nbytes for o, a in zip(demos_obs, demos_act)) + 16_384 * episodes + (1 << 20)
    if shutil.disk_usage(out_dir).free < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir))
    with _datasets_root(out_dir), warnings.catch_warnings():
        # Minari nags about optional metadata (author e-mail, code link) that a local dataset does not need.
        warnings.simplefilter("ignore", UserWarning)
        ds_id = dataset_id(env_id)
        if ds_id in minari.list_local_datasets():
            minari.delete_dataset(ds_id)
        minari.create_dataset_from_buffers(
            dataset_id=ds_id, buffer=buffers, env=env_id, algorithm_name="scripted-expert",
            author="steer", description=f"Scripted {env_id} demonstrations, deliberately mixed quality.",
            data_format="hdf5", observation_space=env.observation_space, action_space=env.action_space)
    env.close()
    return Demos(demos_obs, demos_act, np.asarray(succ), env_id)


def check_env_spec(path: Path) -> None:
    """Refuse a dataset in ``path`` whose metadata names anything but one of steer's registered tasks.

    Reads the metadata JSON only: loading the dataset (or making its env) would import whatever
    module an ``entry_point`` or a ``module:Env`` id names.
    """
    own = {k: v for k, v in gym.registry.items() if k.startswith("steer/")}
    for meta in sorted(Path(path).glob("*/*/data/metadata.json")):
        try:
            spec = json.loads(json.loads(meta.read_text()).get("env_spec") or "null")
        except (OSError, ValueError, AttributeError):
            raise DatasetError(f"{meta} is not readable JSON; the dataset is damaged, collect it again.") from None
        if spec is None:
            continue  # no env recorded: the loader trains for the default task
        env_id = spec.get("id") if isinstance(spec, dict) else None
        reg = own.get(env_id) if isinstance(env_id, str) else None
        if (reg is None or spec.get("entry_point") != reg.entry_point or spec.get("additional_wrappers")
                or spec.get("vector_entry_point") not in (None, reg.vector_entry_point)):
            raise DatasetError(f"the dataset in {path} names the environment {env_id!r}, which is not one of "
                               f"steer's registered tasks ({', '.join(sorted(own))}); it was not loaded.")


def load_demos(path: Path) -> Demos:
    """Load demonstrations written by :func:`collect_demos` from the folder ``path``."""
    import minari

    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"no dataset folder at {path}; create one with `steer collect --out {path}`.")
    check_env_spec(path)
    with _datasets_root(path):
        obs, act, succ = [], [], []
        try:
            ids = [i for i in minari.list_local_datasets() if i.startswith("steer/") and i.endswith("-expert-v0")]
            if len(ids) > 1:
                raise DatasetError(f"{path} holds several steer datasets ({', '.join(sorted(ids))}); keep one "
                                   "per folder.")
            dataset = minari.load_dataset(ids[0] if ids else DATASET_ID)
            for ep in dataset.iterate_episodes():  # a truncated file fails here, not at load_dataset
                obs.append(np.asarray(ep.observations, np.float32))
                act.append(np.asarray(ep.actions, np.float32))
                succ.append(bool(np.asarray(ep.infos["is_success"])[-1]))
            env_id = dataset.spec.env_spec.id if dataset.spec.env_spec is not None else ""
        except DatasetError:
            raise
        except Exception as err:  # minari and h5py raise several types for a missing, truncated or corrupt file
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            raise DatasetError(f"{path} holds no readable steer dataset ({reason}); collect it again.") from err
    if not act:
        raise DatasetError(f"the dataset in {path} has no episodes.")
    return Demos(obs, act, np.asarray(succ), env_id)
