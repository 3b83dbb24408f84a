"""The bookkeeping of `fit`: epoch means of the step metrics, the progress bar, the history file."""

from __future__ import annotations

import json
import math
import sys
from typing import Optional

import jax
import numpy as np


def json_float(v) -> Optional[float]:
    """A float for JSON, None for NaN or Inf (JSON has neither)."""
    v = float(v)
    return v if math.isfinite(v) else None


class Accumulator:
    """Running sums of per-step metrics over one epoch, in step order (so a resumed epoch sums the same way).

    Steps whose update was skipped (`nonfinite`) are counted, not averaged.
    """

    def __init__(self, sums: Optional[dict] = None, count: int = 0, skipped: int = 0):
        self.sums = dict(sums or {})
        self.count = count
        self.skipped = skipped
        self.pending: list = []

    def add(self, metrics) -> None:
        """Queue the device metrics of a step (scalars) or of several chunks (`[n]` arrays)."""
        self.pending.append(metrics)

    def flush(self) -> None:
        """Fold the queued metrics into the sums (one device-to-host transfer)."""
        pending, self.pending = jax.device_get(self.pending), []
        for metrics in pending:
            bad = np.atleast_1d(np.asarray(metrics["nonfinite"]))
            values = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in metrics.items() if k != "nonfinite"}
            for j in range(bad.shape[0]):
                if bad[j]:
                    self.skipped += 1
                    continue
                self.count += 1
                for k, v in values.items():
                    self.sums[k] = self.sums.get(k, 0.0) + float(v[j])

    def means(self) -> dict:
        self.flush()
        out = {k: (s / self.count if self.count else float("nan")) for k, s in self.sums.items()}
        out["nonfinite"] = self.skipped
        return out

    def to_json(self) -> dict:
        self.flush()
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count, "skipped": self.skipped}

    @classmethod
    def from_json(cls, d: dict) -> "Accumulator":
        return cls(d["sums"], d["count"], d["skipped"])


def weighted_means(metrics_list, weights) -> dict:
    """Mean of each metric over evaluation batches or chunks, weighted by their real rows or steps."""
    metrics_list = jax.device_get(metrics_list)
    total = float(np.sum(weights))
    out = {}
    for k in metrics_list[0]:
        values = np.concatenate([np.atleast_1d(np.asarray(m[k], np.float64)) for m in metrics_list])
        w = np.asarray(weights, np.float64)
        keep = w > 0
        out[k] = float(np.sum(values[keep] * w[keep]) / total) if total > 0 else float("nan")
    return out


class HistoryFile:
    """The history as JSON lines, one object per epoch; rewritten from the restored history on resume."""

    def __init__(self, path, history: list):
        self.path = path
        if path is not None:
            with open(path, "w") as f:
                for entry in history:
                    f.write(json.dumps(entry) + "\n")

    def append(self, entry: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


class ProgressBar:
    """A rich progress bar over the steps of each epoch, updated from Python between compiled calls."""

    def __init__(self, enabled: Optional[bool], epochs: int, steps: int):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = bool(enabled)
        self.steps = steps
        self.epochs = epochs
        self._progress = None
        self._task = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                      console=Console(stderr=True))

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    def start_epoch(self, epoch: int, done: int, info: str) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=self.steps, completed=done, epoch=epoch + 1,
                                             epochs=self.epochs, info=info)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def info(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)


def describe(entry: dict) -> str:
    """`loss 0.0123  val_loss 0.0150` for the progress bar."""
    keys = [k for k in ("loss", "val_loss") if k in entry]
    return "  ".join(f"{k} {entry[k]:.4g}" if entry[k] is not None else f"{k} nan" for k in keys)
