"""PyTorch peer: `nn.LSTM` / `nn.GRU` + `nn.Linear`, `torch.optim.Adam`.

On CPU exactly torch==2.13.0 (the CPU build this machine installs; oneDNN's LSTM). Where JAX runs on a
GPU and PyTorch sees one, the modules run there (cuDNN's LSTM and GRU), with whatever PyTorch is
installed, and every timed call waits for the GPU (`timing.wait`). Forward and rollout run under
`torch.inference_mode()`; the rollout is a Python loop of one-step calls of the same module after a
whole-sequence warm-up (PyTorch's usual way). PyTorch orders GRU gate blocks r, z, n; seqjax z, r, n.
"""

from __future__ import annotations

import functools

import numpy as np

from benchmarks.problems import LEARNING_RATE, Problem
from benchmarks.timing import Contender

NAME = "torch"
REQUIRED_VERSION = "2.13.0"


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return torch.__version__.split("+")[0] == REQUIRED_VERSION or device() == "cuda"


@functools.cache
def device() -> str:
    """"cuda" where JAX's default backend is a GPU and PyTorch sees one, else "cpu": both frameworks on
    the same kind of device."""
    import jax
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _full_float32():
    """No TF32 on a GPU (bench sets the same for JAX): the frameworks compare float32 with float32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _tensor(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(device())


def _numpy(t):
    return t.detach().cpu().numpy()


def _gru_order(a, axis=0):
    """z, r, n blocks <-> r, z, n blocks (the permutation is its own inverse)."""
    z, r, n = np.split(np.asarray(a), 3, axis=axis)
    return np.concatenate([r, z, n], axis=axis)


def to_torch(problem: Problem) -> dict:
    """seqjax layer params -> `nn.LSTM`/`nn.GRU` state dict arrays (layer 0)."""
    p = problem.layer
    if problem.cell == "lstm":
        return {"weight_ih_l0": p["w_x"].T, "weight_hh_l0": p["w_h"].T, "bias_ih_l0": p["b"],
                "bias_hh_l0": np.zeros_like(p["b"])}
    return {"weight_ih_l0": _gru_order(p["w_x"].T), "weight_hh_l0": _gru_order(p["w_h"].T),
            "bias_ih_l0": _gru_order(p["b_x"]), "bias_hh_l0": _gru_order(p["b_h"])}


def from_torch_grads(problem: Problem, g: dict) -> dict:
    """Gradients of the state dict arrays -> seqjax layer layout."""
    if problem.cell == "lstm":
        return {"w_x": g["weight_ih_l0"].T, "w_h": g["weight_hh_l0"].T, "b": g["bias_ih_l0"]}
    return {"w_x": _gru_order(g["weight_ih_l0"]).T, "w_h": _gru_order(g["weight_hh_l0"]).T,
            "b_x": _gru_order(g["bias_ih_l0"]), "b_h": _gru_order(g["bias_hh_l0"])}


def _modules(problem: Problem):
    import torch

    cfg = problem.config
    if device() == "cuda":
        _full_float32()
    kind = torch.nn.LSTM if problem.cell == "lstm" else torch.nn.GRU
    rnn = kind(cfg.features, cfg.hidden, batch_first=True).to(device())
    head = torch.nn.Linear(cfg.hidden, cfg.features).to(device())
    with torch.no_grad():
        for name, value in to_torch(problem).items():
            getattr(rnn, name).copy_(_tensor(value))
        head.weight.copy_(_tensor(problem.head["w"].T))
        head.bias.copy_(_tensor(problem.head["b"]))
    return rnn, head


def _how(what: str) -> str:
    return f"{what} ({'cuDNN' if device() == 'cuda' else 'CPU'})"


def forward(problem: Problem) -> Contender:
    import torch

    rnn, _ = _modules(problem)
    xs = _tensor(problem.xs)

    def run():
        with torch.inference_mode():
            return rnn(xs)[0]

    return Contender(NAME, run, lambda: {"ys": _numpy(run())}, _how(
        f"nn.{type(rnn).__name__} under inference_mode"))


def train(problem: Problem) -> Contender:
    import torch

    rnn, head = _modules(problem)
    xs, targets = _tensor(problem.xs), _tensor(problem.targets)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)

    def loss_and_grads():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(head(rnn(xs)[0]), targets)
        loss.backward()
        return loss

    def run():
        loss = loss_and_grads()
        optimizer.step()
        return loss.detach()

    initial = [p.detach().clone() for p in params]

    def result():  # the gradients at the problem's weights, whatever steps `run` has taken since
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, initial):
                p.copy_(s)
        loss = loss_and_grads()
        out = {"loss": _numpy(loss)}
        grads = {name: _numpy(p.grad).copy() for name, p in rnn.named_parameters()}
        out.update({f"layer.{k}": v for k, v in from_torch_grads(problem, grads).items()})
        out["head.w"], out["head.b"] = _numpy(head.weight.grad).T.copy(), _numpy(head.bias.grad).copy()
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        return out

    return Contender(NAME, run, result, _how("loss.backward() + torch.optim.Adam.step()"))


def rollout(problem: Problem) -> Contender:
    import torch

    rnn, head = _modules(problem)
    context = _tensor(problem.context)
    steps = problem.closed_loop

    def run():
        with torch.inference_mode():
            out, state = rnn(context)
            y = head(out[:, -1:])
            future = []
            for _ in range(steps):
                out, state = rnn(y, state)
                y = head(out)
                future.append(y)
            return torch.cat(future, 1)

    return Contender(NAME, run, lambda: {"future": _numpy(run())}, _how(
        "warm-up + Python loop of 1-step calls"))


BUILDERS = {"forward": forward, "train": train, "rollout": rollout}
