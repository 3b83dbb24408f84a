"""Shared plumbing of the experiments: flags, output files, the printed table, figures, shipped data.

Every experiment's `main(argv=None) -> dict` does

    parser = common.parser(__doc__)                  # --quick, --seed, --out already there
    parser.add_argument("--epochs", type=int, default=None, help=...)
    args = common.parse(parser, argv, quick={"epochs": 5}, default={"epochs": 200})
    run = common.Run("forecast", args)               # results/forecast/ (or --out/forecast/)
    fig, ax = common.figure()
    ...
    run.save_figure(fig, "forecast.png")
    return run.finish(metrics, table_rows, columns)  # metrics.json, config.json, the printed table

Defaults that depend on `--quick` are resolved by `parse`: a flag the user gives always wins. Nothing here
imports JAX, so the figures and files stay independent of the model code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import time
from typing import Any, Iterable, Sequence

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DATASETS = pathlib.Path(__file__).resolve().parent / "datasets"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The docstring as written; a flag's fixed default appended to its help unless the help names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default %(default)s)"
        return text


def parser(doc: str) -> argparse.ArgumentParser:
    """An `ArgumentParser` whose help is the module docstring, with `--quick`, `--seed` and `--out`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny settings that finish in seconds (the smoke tests); explicit flags still win")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--out", default="results",
                   help="folder for results: writes OUT/<experiment>/metrics.json, config.json and PNGs "
                        "(default: results)")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None, *, default: dict, quick: dict) -> argparse.Namespace:
    """Parse `argv`; every flag in `default` left unset (None) takes `quick[name]` under `--quick`, else
    `default[name]`. Flags the user passes are kept as given."""
    if set(quick) - set(default):
        raise ValueError(f"experiments.common.parse: quick names {sorted(set(quick) - set(default))} have no default")
    args = p.parse_args(argv)
    for name, value in default.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick.get(name, value) if args.quick else value)
    return args


def json_safe(value: Any) -> Any:
    """`value` with NumPy/JAX scalars and arrays as Python numbers and lists; NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if hasattr(value, "shape") and np.ndim(value) > 0:
        return json_safe(np.asarray(value).tolist())
    if isinstance(value, pathlib.Path):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return x if math.isfinite(x) else None


def all_finite(metrics: Any) -> bool:
    """Every number in a (nested) metrics dict is finite (used by the smoke tests)."""
    if isinstance(metrics, dict):
        return all(all_finite(v) for v in metrics.values())
    if isinstance(metrics, (list, tuple)):
        return all(all_finite(v) for v in metrics)
    if isinstance(metrics, (bool, str)) or metrics is None:
        return isinstance(metrics, (bool, str))
    return bool(np.all(np.isfinite(np.asarray(metrics, dtype=float))))


class Run:
    """The output folder `OUT/<name>/` of one experiment run, and its wall clock."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.args = args
        self.dir = pathlib.Path(args.out) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.figures: list[str] = []
        self.started = time.perf_counter()

    def save_figure(self, fig, filename: str) -> pathlib.Path:
        """Write `fig` as `OUT/<name>/<filename>` (PNG, 110 dpi) and close it."""
        path = self.dir / filename
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(filename)
        return path

    def finish(self, metrics: dict, rows: Iterable[Sequence[Any]], columns: Sequence[str], *,
               title: str | None = None) -> dict:
        """Write `metrics.json` and `config.json`, print the table, return `metrics`.

        `config.json` holds the parsed flags, the figure names and the run time in seconds.
        """
        seconds = time.perf_counter() - self.started
        config = {"experiment": self.name, **vars(self.args), "figures": self.figures,
                  "seconds": round(seconds, 2)}
        (self.dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
        (self.dir / "config.json").write_text(json.dumps(json_safe(config), indent=2) + "\n")
        print()
        print(table(rows, columns, title=title or f"{self.name}  ({seconds:.1f} s, results in {self.dir})"))
        return metrics


def fmt(value: Any) -> str:
    """A number as a short string (4 significant digits), anything else as `str`."""
    if isinstance(value, (bool, str)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    x = float(value)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"


def table(rows: Iterable[Sequence[Any]], columns: Sequence[str], *, title: str = "") -> str:
    """A plain-text table: a title line, a header, a rule and one line per row."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda parts: "  ".join(p.ljust(w) if i == 0 else p.rjust(w)  # noqa: E731
                                   for i, (p, w) in enumerate(zip(parts, widths)))
    out = [title] if title else []
    out += [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(out)


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 9.0, height: float = 4.0, **kwargs):
    """`plt.subplots` with a readable size (inches per panel row) and a light grid style."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), **kwargs)
    for ax in np.ravel(axes):
        ax.grid(True, alpha=0.3)
    return fig, axes


def dataset(filename: str) -> pathlib.Path:
    """The path of a file shipped in `experiments/datasets/` (a clear error when it is missing)."""
    path = DATASETS / filename
    if not path.is_file():
        raise FileNotFoundError(f"experiments: the shipped dataset {path} is missing — it is part of the "
                                f"repository; restore it with git")
    return path
