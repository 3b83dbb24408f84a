"""Every code block of the README's guide sections (training, Coming from Keras / PyTorch, Flax) runs.

Blocks start with a label comment: `# Keras...` blocks need keras, `# PyTorch...` blocks need torch, the
others (`# seqjax...`) need neither. Within a section the blocks run in order in one namespace. A
section runs whole where its frameworks are installed, and its framework-free blocks alone otherwise.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import pytest

import seqjax.flax  # noqa: F401  (the snippets use sj.interop and seqjax.flax)
import seqjax.interop  # noqa: F401

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any `import keras`

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "README.md"
GUIDES = ("Training, stateful chunks and the closed loop", "Coming from Keras", "Coming from PyTorch",
          "Using seqjax layers in Flax")


def _blocks(path=DOC):
    """[(section, label, code)] for every ```python block of a markdown file."""
    out, section = [], None
    for part in re.split(r"(^## .*$)", path.read_text(), flags=re.M):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        for code in re.findall(r"^```python\n(.*?)^```", part, flags=re.M | re.S):
            out.append((section, code.splitlines()[0], code))
    return out


BLOCKS = [b for b in _blocks() if b[0] in GUIDES]
SECTIONS = list(dict.fromkeys(s for s, _, _ in BLOCKS))


def _needs(label: str) -> list[str]:
    return (["keras"] if "Keras" in label else []) + (["torch"] if "PyTorch" in label else [])


def _run(blocks, name):
    namespace = {"__name__": f"coming_from_{name}"}
    for section, label, code in blocks:
        try:
            exec(compile(code, f"{DOC.name} [{section}] {label}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"README.md, section {section!r}, block {label!r} failed: {e!r}") from e


def test_document_shape():
    assert SECTIONS == list(GUIDES)
    for section, label, _ in BLOCKS:
        assert re.match(r"# (Keras|PyTorch|seqjax)", label), f"block without a label in {section}: {label!r}"
    labels = [label for _, label, _ in BLOCKS]
    assert sum("Keras" in lb for lb in labels) >= 7 and sum("PyTorch" in lb for lb in labels) >= 3


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("section", SECTIONS)
def test_section_runs(section):
    """The whole section in order where its frameworks are installed; else its framework-free blocks alone
    (and a skip naming the blocks that could not run)."""
    blocks = [b for b in BLOCKS if b[0] == section]
    missing = sorted({f for _, label, _ in blocks for f in _needs(label) if not _installed(f)})
    runnable = [b for b in blocks if not set(_needs(b[1])) & set(missing)]
    if runnable:
        _run(runnable, section)
    if missing:
        pytest.skip(f"ran {len(runnable)} of {len(blocks)} blocks of {section!r}; the others need {missing}")


def test_keras_predict_claim():
    """The document says: with the JAX backend, `predict` restarts a stateful layer from zero on every call,
    while calling the model continues it."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("the claim is about the JAX backend")
    xs = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    inputs = keras.Input(batch_shape=(2, None, 3))
    lstm = keras.layers.LSTM(3, stateful=True, return_sequences=True, recurrent_initializer="glorot_uniform")
    model = keras.Model(inputs, lstm(inputs))
    whole = np.asarray(model(xs))
    lstm.reset_states()
    called = np.concatenate([np.asarray(model(xs[:, :2])), np.asarray(model(xs[:, 2:]))], axis=1)
    np.testing.assert_allclose(called, whole, atol=1e-6)
    lstm.reset_states()
    predicted = np.concatenate([model.predict(xs[:, :2], verbose=0), model.predict(xs[:, 2:], verbose=0)], axis=1)
    lstm.reset_states()
    fresh = np.asarray(model(xs[:, 2:]))  # steps 3-4 from a zero state
    np.testing.assert_allclose(predicted[:, 2:], fresh, atol=1e-6)
    assert np.abs(predicted[:, 2:] - whole[:, 2:]).max() > 1e-3
    lstm.reset_states()
    on_batch = np.concatenate([model.predict_on_batch(xs[:, :2]), model.predict_on_batch(xs[:, 2:])], axis=1)
    np.testing.assert_allclose(on_batch[:, 2:], fresh, atol=1e-6)
