"""Test setup: 8 fake CPU devices, fast compiles, shared real data.

The XLA flag must be set before JAX initialises its backends, hence at import.
"""

import os
import pathlib
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test session (a fresh temporary
# directory, removed at exit): tests that build the same program (the tiny GAN
# step of several whole-job tests) compile it once.
_CACHE = tempfile.TemporaryDirectory(prefix="t2igan_test_jax_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE.name)

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_threefry_partitionable", True)

# ../shared/data relative to the project root (CI clones main beside shared/).
SHARED_DATA = pathlib.Path(
    os.environ.get("T2I_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real-data folder; tests that need it skip (saying why) without it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real test data not found at {SHARED_DATA} "
                "(set T2I_SHARED_DATA to its location)")
  return SHARED_DATA


@pytest.fixture
def birds(shared_data, tmp_path):
  """A small CUB tree in AttnGAN's layout, made from the shared sample."""
  import attngan_layout  # pylint: disable=g-import-not-at-top
  return attngan_layout.make_birds_layout(shared_data, tmp_path / "birds")
