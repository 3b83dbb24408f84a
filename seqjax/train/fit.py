"""`fit`: epochs of compiled steps with validation, early stopping, checkpoints, a progress bar, a history.

    obj = seqjax.train.objective(model, seqjax.losses.mse)
    result = seqjax.train.fit(obj, optax.adam(1e-3), params, (x_NTF, y_NTF), epochs=20, batch_size=32,
                              val=(x_val, y_val), early_stopping=EarlyStopping(patience=3),
                              checkpoint_dir="runs/a", history_path="runs/a/history.jsonl")
    result.state.params, result.history

Stateless (`train` a tuple `(inputs, targets[, mask])`, a `seqjax.data.Pairs` or a `TrainBatch` of `[N, ...]`
arrays): every epoch shuffles the samples with `numpy.random.default_rng([seed, epoch])` and runs
`ceil(N / batch_size)` steps of `make_train_step`; the last batch is zero-padded and its padding masked,
so every batch has one shape and no sample is dropped.

Stateful (`train` a `seqjax.data.StatefulPairs` from `seqjax.data.stateful_pairs`): every epoch runs the
chunks in order from a fresh carry (`make_stateful_epoch`: one compiled `lax.scan`, or one per
`checkpoint_every` chunks), never shuffled; the final carry is returned for evaluation or forecasting.

With `checkpoint_dir`, a checkpoint is written after every epoch (and every `checkpoint_every` steps);
calling `fit` again with the same arguments resumes from the latest one — mid-epoch too — and ends with
the same params, bit for bit, as a run that was never interrupted (on the same machine and backend).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import data
from seqjax.train._fit_data import StatefulData, StatelessData
from seqjax.train._fit_parts import Accumulator, HistoryFile, ProgressBar, describe, json_float
from seqjax.train._update import check_options
from seqjax.train.checkpoint import Checkpoint, Checkpointer, Position
from seqjax.train.objective import Objective, check_objective
from seqjax.train.state import TrainState, init_state
from seqjax.train.stateful import make_stateful_epoch, make_stateful_eval
from seqjax.train.step import make_eval_step, make_train_step

WHERE = "seqjax.train.fit"


class EarlyStopping(NamedTuple):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    `monitor` defaults to `"val_loss"` with validation data, else `"loss"`; lower is better. With
    `restore_best` the returned params are those of the best epoch (the optimizer state, step and carry
    stay those of the last epoch).
    """

    patience: int
    min_delta: float = 0.0
    monitor: Optional[str] = None
    restore_best: bool = True


class FitResult(NamedTuple):
    """`state`: the final `TrainState`; `history`: one dict per epoch (see `fit`); `carry`: the carry after
    the last training chunk of a stateful run (None when stateless); `stopped_early`: early stopping fired."""

    state: TrainState
    history: list
    carry: Any
    stopped_early: bool


def _check_int(value, name, minimum, allow_none=False):
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        none = "None or " if allow_none else ""
        raise ValueError(f"{WHERE}: {name} must be {none}an int >= {minimum}; got {value!r}")
    return int(value)


def fit(objective, optimizer, params, train, *, epochs: int, batch_size: Optional[int] = None, val=None,
        shuffle: Optional[bool] = None, seed: int = 0, clip_norm=None, on_nonfinite: str = "skip",
        early_stopping: Optional[EarlyStopping] = None, checkpoint_dir=None, checkpoint_every: Optional[int] = None,
        max_to_keep: int = 3, history_path=None, progress: Optional[bool] = None) -> FitResult:
    """Train `objective` with `optimizer` for `epochs` epochs -> `FitResult(state, history, carry, stopped_early)`.

    - `params`: the model's params (copied, never consumed), or a `TrainState` to continue from (its
      optimizer state, step and key; it is donated to the compiled steps). A fresh state uses
      `jax.random.key(seed)` for dropout.
    - `train`: stateless samples with `batch_size` (see the module docstring) or a `StatefulPairs` (then
      `batch_size` is the chunks' and must be None). `val`: data of the same kind, evaluated after each
      epoch without dropout (stateful: its chunks in order from a fresh carry).
    - `shuffle`: stateless default True; stateful chunks are never shuffled (True is refused).
    - `clip_norm`, `on_nonfinite`: as in `make_train_step`.
    - `early_stopping`: an `EarlyStopping`, checked after each epoch.
    - `checkpoint_dir`: checkpoints after each epoch and every `checkpoint_every` steps (batches or
      chunks), the last `max_to_keep` kept; an existing checkpoint there is resumed (it must come from a
      run with the same seed, batch size, data size, mode and `checkpoint_every`; `epochs` may grow).
    - `history_path`: the history as JSON lines, one object per epoch, rewritten on resume.
    - `progress`: a rich progress bar on stderr, updated between compiled calls (default: when stderr is a
      terminal).

    Each history entry: `epoch` (0-based), `step`, `loss`, `grad_norm` and the objective's metrics as means
    over the epoch's applied steps, `nonfinite` (steps skipped), `val_loss` and `val_<metric>` (means over
    validation batches or chunks weighted by their real rows or steps), and `seconds`. NaN is written null.
    Passing the same objective and optimizer objects to `fit` again reuses their compiled programs.
    """
    obj = check_objective(objective, WHERE)
    check_options(optimizer, clip_norm, on_nonfinite, WHERE)
    epochs = _check_int(epochs, "epochs", 1)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1, allow_none=True)
    seed = _check_int(seed, "seed", 0)
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"{WHERE}: early_stopping must be None or EarlyStopping(patience, ...); got "
                            f"{type(early_stopping).__name__}")
        _check_int(early_stopping.patience, "early_stopping.patience", 1)
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError(f"{WHERE}: checkpoint_every needs checkpoint_dir; got checkpoint_dir=None")
    if isinstance(train, data.StatefulPairs):
        if batch_size is not None:
            raise ValueError(f"{WHERE}: batch_size must be None for stateful chunks (their batch is fixed by "
                             f"seqjax.data.stateful_pairs); got {batch_size!r}")
        if shuffle:
            raise ValueError(f"{WHERE}: shuffle must be None or False for stateful chunks: row i of chunk k+1 "
                             f"continues row i of chunk k (Keras's shuffle=False)")
        source = StatefulData(train, val, checkpoint_every)
    else:
        source = StatelessData(train, val, _check_int(batch_size, "batch_size", 1),
                               True if shuffle is None else bool(shuffle), seed)
    state = params if isinstance(params, TrainState) else init_state(params, optimizer, key=jax.random.key(seed))
    run = _Run(obj, optimizer, source, state, seed=seed, clip_norm=clip_norm, on_nonfinite=on_nonfinite,
               early_stopping=early_stopping, checkpoint_every=checkpoint_every,
               validate=val is not None)
    ckpt = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep) if checkpoint_dir is not None else None
    try:
        run.restore(ckpt)
        run.train(epochs, ckpt, HistoryFile(history_path, run.history), progress)
    finally:
        if ckpt is not None:
            ckpt.close()
    return run.result()


class _Run:
    """The mutable side of one `fit` call: state, carry, history, running means, early-stopping book."""

    def __init__(self, obj: Objective, optimizer, source, state: TrainState, *, seed, clip_norm, on_nonfinite,
                 early_stopping, checkpoint_every, validate):
        self.obj, self.source, self.state = obj, source, state
        self.early_stopping, self.checkpoint_every, self.validate = early_stopping, checkpoint_every, validate
        self.config = {"stateful": source.stateful, "seed": seed, "batch_size": getattr(source, "batch_size", None),
                       "samples": source.num_samples, "checkpoint_every": checkpoint_every}
        self.keep_best = early_stopping is not None and early_stopping.restore_best
        self.monitor = None
        if early_stopping is not None:
            self.monitor = early_stopping.monitor or ("val_loss" if validate else "loss")
        self.carry = None
        self.position, self.history, self.acc = Position(0, 0), [], Accumulator()
        self.book = {"best": None, "best_epoch": None, "wait": 0, "stopped": False}
        self.best_params = None
        if source.stateful:
            self.step = make_stateful_epoch(obj, optimizer, clip_norm=clip_norm, on_nonfinite=on_nonfinite,
                                            allow_recompile=True)  # segments may differ in length
            self.evaluate = make_stateful_eval(obj)
        else:
            self.step = make_train_step(obj, optimizer, clip_norm=clip_norm, on_nonfinite=on_nonfinite)
            self.evaluate = make_eval_step(obj)

    def _like(self) -> Checkpoint:
        carry = self.obj.initial_carry(self.source.batch) if self.source.stateful else None
        extra = {"best_params": self.state.params} if self.keep_best else None
        return Checkpoint(self.state, carry, extra=extra)

    def restore(self, ckpt) -> None:
        """Continue from the latest checkpoint in `ckpt`, if there is one."""
        if ckpt is None or ckpt.latest_step() is None:
            return
        restored = ckpt.restore(self._like())
        saved = restored.meta.get("config")
        if saved != self.config:
            raise ValueError(f"{WHERE}: the checkpoint in {ckpt.directory} comes from another run ({saved}); this "
                             f"call has {self.config} — resuming would not continue it; use another checkpoint_dir "
                             f"or the same arguments")
        self.state, self.carry, self.position = restored.state, restored.carry, restored.position
        self.history = restored.meta["history"]
        self.acc = Accumulator.from_json(restored.meta["accumulator"])
        self.book = restored.meta["early_stopping"]
        if self.keep_best and self.book["best"] is not None:
            self.best_params = restored.extra["best_params"]

    def save(self, ckpt, position: Position) -> None:
        if ckpt is None or int(self.state.step) in ckpt.all_steps():
            return
        meta = {"config": self.config, "history": self.history, "accumulator": self.acc.to_json(),
                "early_stopping": self.book}
        extra = None
        if self.keep_best:
            extra = {"best_params": self.best_params if self.best_params is not None else self.state.params}
        ckpt.save(Checkpoint(self.state, self.carry, position, extra, meta))

    def train(self, epochs: int, ckpt, history_file: HistoryFile, progress) -> None:
        every = self.checkpoint_every
        with ProgressBar(progress, epochs, self.source.steps) as bar:
            for epoch in range(self.position.epoch, epochs):
                if self.book["stopped"]:
                    return
                start = self.position.index if epoch == self.position.epoch else 0
                if start == 0:
                    self.acc = Accumulator()
                    self.carry = None  # stateful: a fresh carry, Keras's reset_states() at the epoch start
                bar.start_epoch(epoch, start, describe(self.history[-1]) if self.history else "")
                began = time.perf_counter()
                for item, count, done in self.source.segments(epoch, start, every):
                    if self.source.stateful:
                        self.state, self.carry, metrics = self.step(self.state, item, self.carry)
                    else:
                        self.state, metrics = self.step(self.state, item)
                    self.acc.add(metrics)
                    bar.advance(count)
                    if every is not None and done % every == 0 and done < self.source.steps:
                        self.save(ckpt, Position(epoch, done))
                entry = self._end_epoch(epoch, began)
                history_file.append(entry)
                bar.info(describe(entry))
                self.save(ckpt, Position(epoch + 1, 0))

    def _end_epoch(self, epoch: int, began: float) -> dict:
        """The epoch's history entry; updates early stopping."""
        entry = {"epoch": epoch, "step": int(self.state.step), **self.acc.means()}
        if self.validate:
            entry.update({f"val_{k}": v for k, v in self.source.validate(self.evaluate, self.state.params).items()})
        entry["seconds"] = time.perf_counter() - began
        entry = {k: (json_float(v) if isinstance(v, float) else v) for k, v in entry.items()}
        self.history.append(entry)
        self.acc = Accumulator()
        if self.early_stopping is not None:
            if self.monitor not in entry:
                raise ValueError(f"{WHERE}: early_stopping.monitor must be one of the history's keys {sorted(entry)}; "
                                 f"got {self.monitor!r}")
            value, book = entry[self.monitor], self.book
            if value is not None and (book["best"] is None or value < book["best"] - self.early_stopping.min_delta):
                book.update(best=value, best_epoch=epoch, wait=0)
                if self.keep_best:
                    self.best_params = jax.tree.map(jnp.copy, self.state.params)  # the state gets donated
            else:
                book["wait"] += 1
                book["stopped"] = book["wait"] >= self.early_stopping.patience
        return entry

    def result(self) -> FitResult:
        state = self.state
        if self.keep_best and self.best_params is not None:
            state = state._replace(params=self.best_params)
        return FitResult(state, self.history, self.carry if self.source.stateful else None,
                         bool(self.book["stopped"]))
