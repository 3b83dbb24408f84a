"""The properties `sj.rollout` keeps on a closed-loop kernel, each checked against the same rollout over `step`
(the model's fast paths switched off): shared by the one-layer (`test_native_closed_loop.py`) and the stacked
(`test_native_stack_closed_loop.py`) kernels' tests. `target`: the kernel's custom-call target, which the
compiled rollout must call."""

import jax
import jax.numpy as jnp
import numpy as np

import seqjax as sj


def close(a, b, atol=2e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5), a, b)


def by_steps(model):
    """The same model with every part's fast paths off: `sj.rollout` then steps through `step`."""
    return sj.chain(*(part._replace(sequence=None) for part in model.config["parts"]))


def runs(target: str, fn, *args) -> bool:
    """Whether `jit(fn)(*args)` calls the custom-call `target`."""
    return target in jax.jit(fn).lower(*args).as_text()


def check_rollout(model, params, carry, x0, target, steps=12, atol=2e-6):
    """The rollout calls `target`, the loop over `step` does not, and both give the same outputs and carries
    (of the same types)."""
    rollout = lambda m: lambda p, c, x: sj.rollout(m, p, c, x, steps)  # noqa: E731
    assert runs(target, rollout(model), params, carry, x0)
    assert not runs(target, rollout(by_steps(model)), params, carry, x0)
    got = jax.jit(rollout(model))(params, carry, x0)
    assert got[1].shape == (x0.shape[0], steps, x0.shape[1])
    assert [type(c) for c in got[0]] == [type(c) for c in carry]
    close(got, jax.jit(rollout(by_steps(model)))(params, carry, x0), atol=atol)


def check_forecast(model, params, carry, context, target, steps=7):
    """`sj.forecast` calls `target` after its warm-up and equals the forecast over `step`."""
    forecast = lambda m: lambda p, c, xs: sj.forecast(m, p, c, xs, steps)  # noqa: E731
    assert runs(target, forecast(model), params, carry, context)
    close(jax.jit(forecast(model))(params, carry, context), jax.jit(forecast(by_steps(model)))(params, carry, context))


def check_two_calls(model, params, carry, x0, steps=10):
    """A shorter rollout is the start of a longer one, and two half rollouts with the carry passed on are the
    whole."""
    run = jax.jit(lambda p, c, x: sj.rollout(model, p, c, x, steps))
    whole_carry, whole = run(params, carry, x0)
    shorter = jax.jit(lambda p, c, x: sj.rollout(model, p, c, x, steps - 4))(params, carry, x0)
    close(shorter[1], whole[:, :steps - 4])
    half = jax.jit(lambda p, c, x: sj.rollout(model, p, c, x, steps // 2))
    c1, y1 = half(params, carry, x0)
    c2, y2 = half(params, c1, y1[:, -1])
    close((c2, jnp.concatenate([y1, y2], 1)), (whole_carry, whole))


def check_gradients(model, params, carry, x0, target, carry_loss, steps=9):
    """Gradients (params, carry, `x0`) of a loss of the outputs and of `carry_loss(final carry)` through the
    rollout on `target` are those through the loop over `step`."""
    weights = jnp.sin(jnp.arange(x0.shape[0] * steps * x0.shape[1], dtype=jnp.float32)).reshape(
        x0.shape[0], steps, x0.shape[1])

    def loss(m):
        def fn(p, c, x):
            new_carry, ys = sj.rollout(m, p, c, x, steps)
            return jnp.sum(weights * ys) + carry_loss(new_carry)
        return jax.jit(jax.grad(fn, argnums=(0, 1, 2)))

    assert runs(target, lambda p, c, x: sj.rollout(model, p, c, x, steps)[1], params, carry, x0)
    close(loss(model)(params, carry, x0), loss(by_steps(model))(params, carry, x0), atol=2e-5)


def check_forward_mode(model, params, carry, x0, target, steps=8):
    """`jax.jvp` through the rollout on `target` (a tangent for every param) is that through the loop."""
    tangent = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)

    def jvp(m):
        return jax.jit(lambda p, t: jax.jvp(lambda p: sj.rollout(m, p, carry, x0, steps), (p,), (t,)))

    assert runs(target, lambda p: sj.rollout(model, p, carry, x0, steps)[1], params)
    close(jvp(model)(params, tangent), jvp(by_steps(model))(params, tangent), atol=2e-5)


def check_vmap(model, members, carry, x0, steps=6):
    """`jax.vmap` of the rollout over an ensemble of params (`members`, stacked) gives each member's own."""
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    run = jax.jit(lambda p: sj.rollout(model, p, carry, x0, steps))
    got = jax.vmap(run)(stacked)
    for i, p in enumerate(members):
        close(jax.tree.map(lambda a: a[i], got), run(p))
