"""Side-by-side speed benchmarks of seqjax against Flax `nn.RNN`, Keras 3 (JAX backend) and PyTorch.

    python -m benchmarks.bench            # full table, JSON in benchmarks/results/
    python -m benchmarks.bench --quick    # CI smoke test (tiny sizes, seconds)

Every contender runs the same work with the same weights; outputs (or loss and gradients) are checked
equal before anything is timed. See BENCHMARKS.md for the latest table and how it was measured.
"""
