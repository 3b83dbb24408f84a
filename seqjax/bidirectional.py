"""`bidirectional(forward, backward, merge)`: a forward and a backward pass over the same sequence."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import checks
from seqjax.cell import Cell, CellConfig, compiled_init
from seqjax.loop import run_sequence

MERGES = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mul": lambda f, b: f * b,
    "ave": lambda f, b: (f + b) / 2,
}


class BidirectionalParams(NamedTuple):
    forward: Any
    backward: Any


class BidirectionalCarry(NamedTuple):
    """Final carries: `forward` after the last step, `backward` after the first step."""

    forward: Any
    backward: Any


def bidirectional(forward_cell: Cell, backward_cell: Cell, merge: str = "concat") -> Cell:
    """Keras's `Bidirectional`: `forward_cell` reads the sequence left to right, `backward_cell` right to left.

    Use it with `sj.scan` (alone or inside `sj.chain`); outputs are aligned with the inputs and merged by
    `merge` ("concat" `[B, T, Hf + Hb]`, "sum", "mul", "ave"). With a `mask`, the backward pass keeps its
    initial carry over trailing padding, so each sample's backward pass starts at its last valid step, and
    masked steps output zeros, as Keras's `Bidirectional` does (`sj.scan(..., masked_output="previous")`
    repeats each direction's previous output instead).
    A bidirectional layer needs the whole sequence, so it has no `step` (and no `rollout`).
    """
    checks.check_cell(forward_cell, "sj.bidirectional", "forward_cell")
    checks.check_cell(backward_cell, "sj.bidirectional", "backward_cell")
    checks.check_choice(merge, MERGES, "sj.bidirectional", "merge")
    merge_fn = MERGES[merge]

    def init(key, in_features):
        k_f, k_b = jax.random.split(key)
        return BidirectionalParams(forward_cell.init(k_f, in_features), backward_cell.init(k_b, in_features))

    def initial_carry(batch_size, dtype=jnp.float32):
        return BidirectionalCarry(forward_cell.initial_carry(batch_size, dtype),
                                  backward_cell.initial_carry(batch_size, dtype))

    def input_spec(params):
        if not isinstance(params, BidirectionalParams):
            raise ValueError(f"sj.bidirectional: params must be BidirectionalParams(forward, backward); "
                             f"got {type(params).__name__}")
        spec_f = forward_cell.input_spec(params.forward)
        spec_b = backward_cell.input_spec(params.backward)
        if spec_f != spec_b:
            raise ValueError(f"sj.bidirectional: forward and backward params take different steps: "
                             f"{spec_f.shape} and {spec_b.shape}")
        return spec_f

    def sample_noise(key, params, batch_size, dtype=jnp.float32):
        k_f, k_b = jax.random.split(key)
        return BidirectionalParams(forward_cell.sample_noise(k_f, params.forward, batch_size, dtype),
                                   backward_cell.sample_noise(k_b, params.backward, batch_size, dtype))

    def step(params, carry, x_t, noise=None):
        raise TypeError("sj.bidirectional: a bidirectional layer needs the whole sequence and has no step-wise "
                        "form; run it with sj.scan, not sj.rollout or step")

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous"):
        noise = noise if noise is not None else BidirectionalParams(None, None)
        masked_output = "zero" if masked_output is None else masked_output  # Keras's Bidirectional
        carry_f, ys_f = run_sequence(forward_cell, params.forward, carry.forward, xs_TB, mask_TB=mask_TB,
                                     reset_TB=reset_TB, noise=noise.forward, unroll=unroll,
                                     masked_output=masked_output)
        flip = lambda a: None if a is None else jnp.flip(a, 0)  # noqa: E731
        carry_b, ys_b = run_sequence(backward_cell, params.backward, carry.backward, flip(xs_TB),
                                     mask_TB=flip(mask_TB), reset_TB=flip(reset_TB), noise=noise.backward,
                                     unroll=unroll, masked_output=masked_output)
        return BidirectionalCarry(carry_f, carry_b), merge_fn(ys_f, flip(ys_b))

    return Cell(init=compiled_init(init), initial_carry=initial_carry, step=step, input_spec=input_spec,
                sample_noise=sample_noise, sequence=sequence, name="bidirectional",
                config=CellConfig(forward=forward_cell, backward=backward_cell, merge=merge))

