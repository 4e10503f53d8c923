"""``steer drive view``: render a driving episode to PNG frames and a GIF."""

from __future__ import annotations

import os
from dataclasses import dataclass


class DriveViewError(Exception):
    """A ``steer drive view`` option the user set cannot work."""

    user_facing = True


@dataclass(frozen=True)
class DriveViewConfig:
    """Options of ``steer drive view``."""

    out: str = "runs/drive_view"
    """Folder for the PNG frames and the GIF (created if missing)."""
    seed: int = 0
    """Seed of the town and of the episode."""
    town_size: int = 3
    """Junctions per side of the generated town."""
    steps: int = 300
    """Most steps to render (the episode may end earlier)."""
    policy: str = "expert"
    """Who drives: "expert" (the scripted driver)."""
    frames: bool = True
    """Write every frame as a PNG."""
    gif: bool = True
    """Write the episode as ``episode.gif``."""
    bev_size: int = 128
    """BEV width and height, pixels."""
    pixels_per_meter: float = 2.0
    """BEV resolution."""
    scale: int = 3
    """Upscaling of the saved pictures."""


def view(cfg: DriveViewConfig) -> int:
    """Render one episode of the embedded driving simulator to PNG frames and a GIF."""
    if cfg.policy != "expert":
        raise DriveViewError(f"unknown policy {cfg.policy!r}; only 'expert' is available for now.")
    if cfg.steps <= 0 or cfg.town_size < 2 or cfg.bev_size < 16:
        raise DriveViewError("steps must be positive, town-size at least 2 and bev-size at least 16.")
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from steer.driving.bev import BevConfig, bev_to_rgb
    from steer.driving.env import DriveEnvConfig, DriveVectorEnv
    from steer.driving.expert import ExpertDriver
    from steer.driving.simulator import SimConfig
    from steer.driving.town import TownConfig

    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as err:
        raise DriveViewError(f"cannot create the output folder {cfg.out!r} ({err.strerror}).") from err
    ego_row = int(cfg.bev_size * 0.39)
    env_cfg = DriveEnvConfig(
        sim=SimConfig(seed=cfg.seed, n_towns=1, routes_per_town=16, town=TownConfig(nx=cfg.town_size, ny=cfg.town_size)),
        bev=BevConfig(size=cfg.bev_size, pixels_per_meter=cfg.pixels_per_meter, ego_from_bottom=ego_row),
    )
    env = DriveVectorEnv(1, env_cfg, autoreset=False)
    obs, _ = env.reset(seed=cfg.seed)
    expert = ExpertDriver(env.sim)
    pictures = []
    ego_px = (max(2, int(4.5 * cfg.pixels_per_meter)), max(1, int(2.0 * cfg.pixels_per_meter)))
    info = {}
    for k in tqdm(range(cfg.steps), desc="drive view", unit="step"):
        img = bev_to_rgb(obs["bev"][0], ego_row, ego_px)
        pic = Image.fromarray(img).resize((img.shape[1] * cfg.scale, img.shape[0] * cfg.scale), Image.NEAREST)
        pictures.append(pic)
        if cfg.frames:
            pic.save(os.path.join(cfg.out, f"frame_{k:04d}.png"))
        obs, _, term, trunc, info = env.step(expert.act())
        if term[0] or trunc[0]:
            break
    if cfg.gif and pictures:
        pictures[0].save(os.path.join(cfg.out, "episode.gif"), save_all=True, append_images=pictures[1:],
                         duration=100, loop=0)
    done = "finished" if info.get("finished", [False])[0] else "stopped"
    print(f"{len(pictures)} frames in {cfg.out}; route completion "
          f"{100 * float(info['route_completion'][0]) if info else 0:.1f} % ({done}).")
    return 0
