"""seqjax.train: compiled training with optax — stateless steps, stateful truncated-BPTT epochs,
orbax checkpoints and `fit`.

- `objective(model, loss)` / `stateless_objective(loss_fn)` / `Objective(loss_fn, initial_carry)`: what
  is minimised, `loss_fn(params, carry, batch, key) -> (loss, LossAux(carry, metrics))`.
- `init_state(params, optimizer, key=)` -> `TrainState(params, opt_state, step, key)`.
- `make_train_step`, `make_eval_step`: `(state, batch) -> (state, metrics)`, `(params, batch) -> metrics`.
- `make_stateful_train_step`, `make_stateful_epoch`, `make_stateful_eval`: the carry passes from chunk to
  chunk with `stop_gradient` between them; an epoch is one `lax.scan` over the chunks.
- `Checkpointer`, `Checkpoint`, `Position`: atomic orbax checkpoints of state, carry and data position.
- `fit(objective, optimizer, params, train, epochs=, ...)` -> `FitResult(state, history, carry, stopped_early)`.
- `keras_adam(...)`: Keras's Adam (with `decay` and `amsgrad`) as an optax optimizer.
"""

from seqjax.train.checkpoint import Checkpoint, Checkpointer, Position
from seqjax.train.fit import EarlyStopping, FitResult, fit
from seqjax.train.objective import LossAux, Objective, objective, stateless_objective
from seqjax.train.optimizers import ScaleByKerasAdamState, keras_adam, scale_by_keras_adam
from seqjax.train.state import NonFiniteError, TrainBatch, TrainState, init_state
from seqjax.train.stateful import (
    StatefulEpoch,
    StatefulEval,
    StatefulTrainStep,
    make_stateful_epoch,
    make_stateful_eval,
    make_stateful_train_step,
)
from seqjax.train.step import EvalStep, TrainStep, make_eval_step, make_train_step

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "EarlyStopping",
    "EvalStep",
    "FitResult",
    "LossAux",
    "NonFiniteError",
    "Objective",
    "Position",
    "ScaleByKerasAdamState",
    "StatefulEpoch",
    "StatefulEval",
    "StatefulTrainStep",
    "TrainBatch",
    "TrainState",
    "TrainStep",
    "fit",
    "init_state",
    "keras_adam",
    "make_eval_step",
    "make_stateful_epoch",
    "make_stateful_eval",
    "make_stateful_train_step",
    "make_train_step",
    "objective",
    "scale_by_keras_adam",
    "stateless_objective",
]
