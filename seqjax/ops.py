"""Small sequence-shaping operations."""

from __future__ import annotations

import jax.numpy as jnp

from seqjax import checks


def repeat(x, steps: int):
    """Keras's `RepeatVector`: `x [B, F] -> [B, steps, F]`, the same vector at every step (one-to-many)."""
    x = checks.as_array(x, "sj.repeat", "x")
    if x.ndim != 2:
        raise ValueError(f"sj.repeat: x must be [batch, features]; got {tuple(x.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sj.repeat: steps must be an int >= 1; got {steps!r}")
    return jnp.broadcast_to(x[:, None, :], (x.shape[0], steps, x.shape[1]))
