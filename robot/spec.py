"""The wire contracts between training, the robot and the console, each defined once.

Torch-free: the robot installs this module without the training stack, and ``steer.agent``
may import it.

The BC baseline (decided here, used everywhere)
------------------------------------------------
A BC diffusion policy's action for an observation depends on its initial noise w. *The*
BC policy — the one ``steer bc`` evaluates, the conservative gate protects as its
baseline, the safe set falls back to, DSRL's warm-up samples, and the robot runs when no
learner steers it — draws

    w ~ N(0, I), clipped elementwise to ±latent_noise_bound.

Why clipped: DSRL's MDP has the latent box [-b, b] as its action space. With the
baseline inside that box, the gate's baseline, the fallback and the learner's warm-up
are all actions the learner could itself take, and the baseline the gate measures is
exactly the policy that ships. At b = 1.5 about 13 % of the elements are clipped.
The bound travels with the policy: the BC run's config and the ONNX spec both carry
``latent_noise_bound``.
"""

from __future__ import annotations

import numpy as np

#: The default latent noise bound b (DSRL's usual value).
DEFAULT_LATENT_NOISE_BOUND = 1.5


def base_noise(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """The BC baseline's initial noise: ``N(0, I)`` of ``shape`` clipped to ``±bound`` (float32).

    Every place that runs "the BC policy" draws its noise through this function, so the
    same generator state gives the same noise — and the same action chunk — everywhere.
    """
    if not bound > 0:
        raise ValueError(f"latent noise bound must be positive, got {bound}")
    return np.clip(rng.standard_normal(shape), -bound, bound).astype(np.float32)
