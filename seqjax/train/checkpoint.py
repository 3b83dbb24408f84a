"""Checkpoint and resume with orbax-checkpoint: everything a run needs to continue bit for bit.

A `Checkpoint` bundles the `TrainState` (params, optax state, step, PRNG key), the carry of a stateful
run, the data position (epoch, batches or chunks of it done), optional extra arrays (e.g. the best
params so far) and JSON metadata (e.g. the history). `Checkpointer` saves one per training step into
`directory/<step>`; orbax writes each save to a temporary directory and renames it when complete, so an
interrupted save never leaves a half-written checkpoint, and only the last `max_to_keep` are kept.

    ckpt = Checkpointer("/abs/or/relative/dir", max_to_keep=3)
    ckpt.save(Checkpoint(state, carry, Position(epoch, index)))
    ...
    like = Checkpoint(init_state(model.init(key, F), optimizer), model.initial_carry(B))
    restored = ckpt.restore(like)          # the latest; optax states come back as their own types

Restoring needs a `like` of the right structure (build it from the model and optimizer, e.g. the fresh
state of a new run): arrays are read into its structure, shapes and dtypes. A checkpoint that does not
fit (another model, optimizer, batch size or carry) raises a ValueError naming the first mismatches.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from seqjax.train.state import TrainState

FORMAT = "seqjax.train.checkpoint/1"


class Position(NamedTuple):
    """Where in the data a run stands: `index` batches (or chunks) of epoch `epoch` are done (0-based)."""

    epoch: int = 0
    index: int = 0


class Checkpoint(NamedTuple):
    """What is saved: `state`, the stateful `carry` (None when stateless), the data `position`, `extra`
    arrays (any pytree, None for none) and `meta` (a JSON-serialisable dict)."""

    state: TrainState
    carry: Any = None
    position: Position = Position()
    extra: Any = None
    meta: Optional[dict] = None


def _is_typed_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _arrays(ckpt: Checkpoint) -> dict:
    """The array part of a checkpoint as a plain tree (typed PRNG keys still typed)."""
    state = ckpt.state
    return {"state": {"params": state.params, "opt_state": state.opt_state, "step": state.step, "key": state.key},
            "carry": ckpt.carry, "extra": ckpt.extra}


def _key_data(tree):
    """Typed PRNG keys (the state's key, noisy_sgd's key, ...) as their uint32 key data: what is stored."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _rewrap_keys(restored, like):
    """Typed keys back where `like` has them, with `like`'s key implementation."""
    return jax.tree.map(lambda r, k: jax.random.wrap_key_data(r, impl=jax.random.key_impl(k)) if _is_typed_key(k)
                        else r, restored, like)


def _abstract(tree):
    """ShapeDtypeStructs (with a sharding, as orbax needs) for the arrays of `tree`."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = device
        dtype = getattr(x, "dtype", None) or np.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


def _flat(tree) -> dict:
    """`{"a.b.0": leaf}` for every array leaf of an orbax (serialised) tree."""
    return {".".join(map(str, k)): v for k, v in ocp.tree.to_flat_dict(tree).items()}


_ORDER = ("state.params.", "carry.", "state.opt_state.", "extra.")


def _rank(path: str):
    """Params first (what tells models apart), then the carry, the optimizer state, the rest."""
    return next((i for i, prefix in enumerate(_ORDER) if path.startswith(prefix)), len(_ORDER)), path


def _mismatches(saved: dict, wanted: dict) -> list[str]:
    problems = []
    for path in saved.keys() | wanted.keys():
        if path not in wanted:
            text = f"{path} is in the checkpoint (shape {tuple(saved[path].shape)}) but not in the target"
        elif path not in saved:
            text = f"{path} is in the target (shape {tuple(wanted[path].shape)}) but not in the checkpoint"
        else:
            s, w = saved[path], wanted[path]
            if tuple(s.shape) == tuple(w.shape) and np.dtype(s.dtype) == np.dtype(w.dtype):
                continue
            text = (f"{path} has shape {tuple(s.shape)} {np.dtype(s.dtype)} in the checkpoint but "
                    f"{tuple(w.shape)} {np.dtype(w.dtype)} in the target")
        problems.append((_rank(path), text))
    return [text for _, text in sorted(problems)]


class Checkpointer:
    """Saves and restores `Checkpoint`s in `directory` (created if missing), keeping the last `max_to_keep`
    (None keeps all). Use as a context manager or call `close()`."""

    def __init__(self, directory, *, max_to_keep: Optional[int] = 3):
        where = "seqjax.train.Checkpointer"
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{where}: directory must be a path; got {type(directory).__name__}")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"{where}: max_to_keep must be None or an int >= 1; got {max_to_keep!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=False)
        handlers = {"arrays": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints in the directory, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The step of the newest complete checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def save(self, checkpoint: Checkpoint) -> int:
        """Save `checkpoint` as step `int(checkpoint.state.step)` (returned), atomically; waits until written."""
        where = "seqjax.train.Checkpointer.save"
        if not isinstance(checkpoint, Checkpoint) or not isinstance(checkpoint.state, TrainState):
            raise TypeError(f"{where}: checkpoint must be a Checkpoint(state=TrainState, ...); got "
                            f"{type(checkpoint).__name__}")
        step = int(checkpoint.state.step)
        if step in self._manager.all_steps():
            raise ValueError(f"{where}: step {step} is already saved in {self.directory}; save once per step")
        position = Position(*(int(v) for v in checkpoint.position))
        meta = {"format": FORMAT, "position": list(position),
                "meta": checkpoint.meta if checkpoint.meta is not None else {}}
        arrays = jax.tree.map(lambda x: np.array(x) if isinstance(x, jax.Array) else x, _key_data(_arrays(checkpoint)))
        self._manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                         meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()
        return step

    def restore(self, like: Checkpoint, *, step: Optional[int] = None) -> Checkpoint:
        """The checkpoint at `step` (default: the latest) read into the structure of `like`.

        `like` holds arrays or `jax.ShapeDtypeStruct`s of the target structure (a fresh state of the same
        model and optimizer, the carry of the same batch size or None, the extra arrays or None). Raises
        FileNotFoundError when there is no checkpoint and ValueError when it does not fit `like`.
        """
        where = "seqjax.train.Checkpointer.restore"
        if not isinstance(like, Checkpoint) or not isinstance(like.state, TrainState):
            raise TypeError(f"{where}: like must be a Checkpoint(state=TrainState, ...) of the target structure; "
                            f"got {type(like).__name__}")
        steps = self._manager.all_steps()
        if step is None:
            step = self._manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"{where}: no checkpoint in {self.directory}")
        elif step not in steps:
            raise FileNotFoundError(f"{where}: no checkpoint for step {step} in {self.directory}; saved steps: "
                                    f"{sorted(steps)}")
        like_arrays = _arrays(like)
        target = _abstract(jax.eval_shape(_key_data, like_arrays))
        saved = self._manager.item_metadata(step)["arrays"]
        problems = _mismatches(_flat(saved.tree), _flat(ocp.tree.serialize_tree(target, keep_empty_nodes=True)))
        if problems:
            shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
            raise ValueError(f"{where}: the checkpoint at step {step} in {self.directory} does not fit the target: "
                             f"{shown} — a checkpoint of another model, optimizer or batch size?")
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
        except ValueError as e:
            raise ValueError(f"{where}: the checkpoint at step {step} in {self.directory} does not fit the "
                             f"structure of the target (same arrays, different containers: another optimizer "
                             f"chain or carry type?): {e}") from e
        arrays, meta = _rewrap_keys(out["arrays"], like_arrays), out["meta"]
        s = arrays["state"]
        state = TrainState(s["params"], s["opt_state"], jnp.asarray(s["step"], jnp.int32), s["key"])
        return Checkpoint(state, arrays["carry"], Position(*meta["position"]), arrays["extra"], meta["meta"])

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
