"""Feedback: how a closed loop turns the model's output `y_t` into its next input `x_(t+1)`.

`sj.rollout`, `sj.forecast` and scheduled sampling take `feedback=` as either a plain callable
`y_t -> x_(t+1)` or a `Feedback` built here:

- `identity()`: the output is the next input (output size must equal input size); the default.
- `head(cell, params)`: a stateless cell (e.g. `sj.dense(F)`) maps the output back into the input space.
- `sample_token(temperature=, top_k=, embed=)`: samples a token id from logits with a PRNG key
  (temperature 0 is argmax), optionally embedding it; for language models.
- your own `Feedback(apply=lambda y_t, key: ..., needs_key=True)`, e.g. drawing the next input from a
  Gaussian output head for Monte-Carlo forecast ensembles (`jax.vmap` the rollout over keys).

Keys: a closed loop given `key` feeds output `i` back with `step_key(key, i) = fold_in(key, i)`, so the
same key reproduces a run and a longer run with the same key starts with the same samples.
Exogenous inputs (known in advance: calendar features, controls) are appended after the fed-back part:
`x_(t+1) = concat([feedback(y_t), exogenous_t], -1)`; see `sj.rollout` for which step gets which row.
`next_inputs` recomputes the inputs a closed loop fed itself (the sampled tokens of a generation).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import checks
from seqjax.cell import Cell

__all__ = ["Feedback", "head", "identity", "next_inputs", "sample_token", "step_key"]


class Feedback(NamedTuple):
    """`apply(y_t, key) -> x_(t+1)`; `key` is a PRNG key when `needs_key`, else None."""

    apply: Callable[[Any, Optional[jax.Array]], jax.Array]
    needs_key: bool = False
    name: str = "feedback"


def _unchanged(y_t, key):
    return y_t


def identity() -> Feedback:
    """The output is fed back unchanged; the model's output size must equal its input size."""
    return Feedback(apply=_unchanged, needs_key=False, name="identity")


def is_identity(feedback: Feedback) -> bool:
    """Whether `feedback` is `identity()` (a closed loop may then run on a model's own closed-loop kernel)."""
    return feedback.apply is _unchanged


def _is_stateless(cell: Cell) -> bool:
    return not jax.tree.leaves(jax.eval_shape(lambda: cell.initial_carry(1)))


def head(cell: Cell, params) -> Feedback:
    """Map the output back into the input space with a stateless cell: `x = cell.step(params, (), y_t)`.

    `cell` is `sj.dense(F)`, `sj.activation(...)` or a `sj.chain` of stateless cells; `params` are its params.
    """
    where = "sj.feedback.head"
    checks.check_cell(cell, where)
    if not _is_stateless(cell):
        raise ValueError(f"{where}: cell must be stateless (dense, activation, a chain of them); {cell.name} "
                         f"has a carry")
    spec = cell.input_spec(params)

    def apply(y_t, key):
        y_t = checks.check_inputs(y_t, spec, where, "the model's output y_t", ("batch",))
        return cell.step(params, cell.initial_carry(y_t.shape[0]), y_t)[1]

    return Feedback(apply=apply, needs_key=False, name=f"head({cell.name})")


def sample_token(*, temperature: float = 1.0, top_k: Optional[int] = None,
                 embed: Optional[Callable[[jax.Array], jax.Array]] = None) -> Feedback:
    """Sample a token id `[B]` (int32) from logits `y_t [B, V]`; always takes a key.

    `temperature` divides the logits; 0 takes the argmax (greedy: the key is then unused). `top_k`
    keeps only the k largest logits before sampling. `embed` (ids -> inputs, e.g. an embedding lookup
    or `jax.nn.one_hot`) maps the sampled ids into the input space of a model that does not start
    with `sj.embed`; without it the ids themselves are fed back.
    """
    where = "sj.feedback.sample_token"
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"{where}: temperature must be a float >= 0 (0 = argmax); got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{where}: top_k must be None or an int >= 1; got {top_k!r}")
    if embed is not None and not callable(embed):
        raise TypeError(f"{where}: embed must be None or a callable ids -> inputs; got {type(embed).__name__}")
    temperature = float(temperature)

    def apply(logits, key):
        if not isinstance(logits, (jax.Array, jax.ShapeDtypeStruct)) or logits.ndim != 2:
            raise ValueError(f"{where}: the model's output must be logits [batch, vocab]; got "
                             f"{jax.tree.map(jnp.shape, logits)}")
        if top_k is not None and top_k > logits.shape[-1]:
            raise ValueError(f"{where}: top_k must be <= the vocabulary size {logits.shape[-1]}; got {top_k}")
        if temperature == 0.0:
            ids = jnp.argmax(logits, axis=-1)
        else:
            scaled = logits.astype(jnp.float32) / temperature
            if top_k is not None:
                kth = lax.top_k(scaled, top_k)[0][:, -1:]
                scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
            ids = jax.random.categorical(key, scaled, axis=-1)
        ids = ids.astype(jnp.int32)
        return ids if embed is None else embed(ids)

    return Feedback(apply=apply, needs_key=True, name="sample_token")


def as_feedback(feedback, where: str) -> Feedback:
    """`None` -> `identity()`, a `Feedback` as is, a plain callable `y_t -> x` wrapped; else a TypeError."""
    if feedback is None:
        return identity()
    if isinstance(feedback, Feedback):
        return feedback
    if callable(feedback):
        name = getattr(feedback, "__name__", type(feedback).__name__)
        return Feedback(apply=lambda y_t, key: feedback(y_t), needs_key=False, name=name)
    raise TypeError(f"{where}: feedback must be None, a callable y_t -> x_(t+1) or a sj.feedback.Feedback; "
                    f"got {type(feedback).__name__}")


def check_key(feedback: Feedback, key, where: str):
    """The key a closed loop needs: required by a sampling feedback, refused by any other."""
    key = checks.check_key(key, where)
    if feedback.needs_key and key is None:
        raise ValueError(f"{where}: key is required: feedback {feedback.name} samples; pass key=jax.random.key(...)")
    if not feedback.needs_key and key is not None:
        raise ValueError(f"{where}: key is only used by a sampling feedback (sj.feedback.sample_token); "
                         f"feedback {feedback.name} takes none — drop key=")
    return key


def check_exogenous(exogenous, batch: int, steps: int, where: str, argument: str = "exogenous"):
    """`[batch, steps, E]` floating, or None."""
    if exogenous is None:
        return None
    exogenous = checks.as_array(exogenous, where, argument)
    if exogenous.ndim != 3 or tuple(exogenous.shape[:2]) != (batch, steps):
        raise ValueError(f"{where}: {argument} must be [batch, steps, features] = ({batch}, {steps}, E); got "
                         f"{tuple(exogenous.shape)}")
    if not jnp.issubdtype(exogenous.dtype, jnp.floating):
        raise TypeError(f"{where}: {argument} must be floating; got dtype {exogenous.dtype}")
    return exogenous


def step_key(key, i):
    """The key output `i` is fed back with: `fold_in(key, i)` (None without a key)."""
    return None if key is None else jax.random.fold_in(key, i)


def feed(feedback: Feedback, y_t, key_t, exogenous_t, like):
    """The next input: `feedback(y_t)`, then `exogenous_t [B, E]` appended, cast to `like`'s dtype."""
    x = feedback.apply(y_t, key_t)
    if exogenous_t is not None:
        x = jnp.concatenate([x.astype(like.dtype), exogenous_t.astype(like.dtype)], axis=-1)
    return x.astype(like.dtype)


def _describe(tree) -> str:
    shapes = jax.tree.map(lambda a: tuple(a.shape), tree)
    return str(shapes)


def check_fit(feedback: Feedback, y_t, x_like, key, exogenous_t, where: str) -> None:
    """Trace-time check that `feed(...)` of an output shaped like `y_t` has `x_like`'s shape and dtype kind.

    `y_t`, `x_like` and `exogenous_t` may be arrays or `jax.ShapeDtypeStruct`s.
    """
    k = None if key is None else jax.eval_shape(lambda k: step_key(k, 0), key)
    x = jax.eval_shape(feedback.apply, y_t, k)
    what = "the model's output" if feedback.name == "identity" else f"feedback {feedback.name}(output)"
    if not isinstance(x, jax.ShapeDtypeStruct):
        raise TypeError(f"{where}: {what} must be one array, the next input {tuple(x_like.shape)}; got "
                        f"{_describe(x)} — pass feedback= to map the output to an input")
    integer_in = jnp.issubdtype(x_like.dtype, jnp.integer)
    if jnp.issubdtype(x.dtype, jnp.integer) != integer_in:
        raise TypeError(f"{where}: {what} must be {'integer token ids' if integer_in else 'floating'} like the "
                        f"input ({x_like.dtype}); got {x.dtype}")
    shape = tuple(x.shape)
    if exogenous_t is not None:
        if integer_in or x.ndim != 2:
            raise ValueError(f"{where}: exogenous inputs need feature inputs [batch, features] to append to; "
                             f"the input is {tuple(x_like.shape)} {x_like.dtype} and {what} is {shape}")
        shape = shape[:-1] + (shape[-1] + exogenous_t.shape[-1],)
    if shape != tuple(x_like.shape):
        notes = [] if feedback.name == "identity" else [f"from the model's output {_describe(y_t)}"]
        if exogenous_t is not None:
            notes.append(f"with {exogenous_t.shape[-1]} exogenous features appended")
        note = f" ({', '.join(notes)})" if notes else ""
        raise ValueError(
            f"{where}: {what} must fit the input {tuple(x_like.shape)}; got {shape}{note} — pass feedback= to "
            f"map outputs to inputs, or exogenous= [batch, steps, E] for the inputs known in advance")


def next_inputs(feedback, ys, *, key=None, exogenous=None) -> jax.Array:
    """The inputs a closed loop fed itself: `[B, steps, ...]` with `[:, i] = feed(ys[:, i])`.

    `ys` (the outputs of `sj.rollout` / `sj.forecast`), `key` and `exogenous` as passed to that call, so
    the result holds the sampled tokens of a generation, and `[:, -1]` is the `x0` that continues it.
    """
    where = "sj.feedback.next_inputs"
    fb = as_feedback(feedback, where)
    key = check_key(fb, key, where)
    leaves = jax.tree.leaves(ys)
    if not leaves or any(jnp.ndim(a) < 2 for a in leaves):
        raise ValueError(f"{where}: ys must be [batch, steps, ...]; got {_describe(ys)}")
    batch, steps = leaves[0].shape[:2]
    exogenous = check_exogenous(exogenous, batch, steps, where)
    ys_TB = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), ys)

    def one(i, y_t, e_t):
        x = fb.apply(y_t, step_key(key, i))
        if e_t is not None:
            x = jnp.concatenate([x, e_t.astype(x.dtype)], axis=-1)
        return x

    e_TB = None if exogenous is None else jnp.swapaxes(exogenous, 0, 1)
    xs_TB = jax.vmap(one)(jnp.arange(steps), ys_TB, e_TB)
    return jnp.swapaxes(xs_TB, 0, 1)
