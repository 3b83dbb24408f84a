"""What the recurrent fast paths share: the hand-over to the reference loop, and gate blocks."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from seqjax.cell import Cell, no_noise
from seqjax.fast import engine
from seqjax.fast.plan import plan_for
from seqjax.loop import scan_steps


def blocks(a, hidden, count):
    """The `count` gate blocks of width `hidden` along the last axis."""
    return tuple(a[..., k * hidden:(k + 1) * hidden] for k in range(count))


def reference_loop(step, initial_carry):
    """`scan_steps` over `step`: the loop a fast path hands over to for what it does not implement."""
    stepper = Cell(init=None, initial_carry=initial_carry, step=step, input_spec=None, sample_noise=no_noise,
                   name="reference")
    return functools.partial(scan_steps, stepper)


@functools.lru_cache(maxsize=None)
def _loop(maths: engine.Gated, plan, head=None):
    return engine.sequence(maths, plan, head)


def fast_sequence(step, initial_carry, maths: engine.Gated, *, maths_supported: bool, param_names: tuple,
                  carry_type):
    """A `Cell.sequence` running `maths` through `seqjax.fast.engine` with the plan `plan_for` picks.

    `param_names`: the params holding `(w_x, w_h, b_x[, b_h])`. It hands over to the reference loop over
    `step` (same maths step by step) when the cell's maths is not `maths`, with `mask`/`reset`, with
    recurrent dropout, or when params, carry and inputs are not all of one floating dtype. Input dropout
    multiplies all steps at once, as the step does.

    `head` (an `engine.Head`, with its `head_params`; `chain` passes the dense / activation parts that
    follow the layer, without `mask` or `reset`): the outputs are the head's, and evaluated without a
    gradient the head runs inside the loop (`sequence.takes_head` marks functions that accept it).
    """
    reference = reference_loop(step, initial_carry)

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous", head=None, head_params=()):

        def by_reference():  # on the inputs as given: the reference step applies the dropout masks itself
            ref_params, ref_xs, ref_noise = params, xs_TB, noise
            w_x = param_names[0]
            if jnp.shape(params[w_x])[0] == 1:  # one input feature: see `engine.zero_feature`
                ref_params = {**params, w_x: engine.zero_feature(params[w_x], 0)}
                ref_xs = engine.zero_feature(xs_TB, -1)
                if noise is not None and "x" in noise:
                    ref_noise = {**noise, "x": engine.zero_feature(noise["x"], -1)}
            new_carry, ys = reference(ref_params, carry, ref_xs, mask_TB=mask_TB, reset_TB=reset_TB,
                                      noise=ref_noise, unroll=unroll, masked_output=masked_output)
            return new_carry, ys if head is None else head.sequence(head_params, ys)

        arrays = [params[n] for n in param_names] + list(carry) + [xs_TB]
        dtypes = {jnp.result_type(a) for a in arrays}
        if (not maths_supported or mask_TB is not None or reset_TB is not None
                or (noise is not None and "h" in noise) or len(dtypes) != 1
                or not jnp.issubdtype(next(iter(dtypes)), jnp.floating)):
            return by_reference()
        time, batch, features = xs_TB.shape
        plan = plan_for(batch, time, features, carry[0].shape[-1], maths.name)
        if plan.use_reference:
            return by_reference()
        # one input dropout mask for the whole call, as the step applies it
        inputs = xs_TB * noise["x"] if noise is not None and "x" in noise else xs_TB
        if unroll != 1:
            plan = plan._replace(unroll=unroll)
        names = tuple(param_names) + (None,) * (4 - len(param_names))
        w = engine.Weights(*(None if n is None else params[n] for n in names))
        if head is None:
            new_carry, ys_TB = _loop(maths, plan)(w, tuple(carry), inputs)
        else:
            new_carry, ys_TB = _loop(maths, plan, head)(w, tuple(head_params), tuple(carry), inputs)
        return carry_type(*new_carry), ys_TB

    sequence.takes_head = True
    return sequence
