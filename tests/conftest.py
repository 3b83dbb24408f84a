import os
import shutil
import sys
import tempfile

import jax

# the tests import their NumPy references as a plain module
sys.path.insert(0, os.path.dirname(__file__))

# Many tests compile the same small programs (same cell, same shapes, new closures). A compilation cache
# private to this run lets them share the compiled code: it starts empty, so nothing stale is ever used.
_CACHE_DIR = tempfile.mkdtemp(prefix="seqjax-test-jax-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
