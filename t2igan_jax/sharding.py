"""Device mesh and data-parallel shardings.

One ``("data",)`` mesh axis over every device of every process, with Auto axis
types (``jax.make_mesh`` defaults to Explicit axes in this JAX, which breaks
``nn.Embed`` on a sharded batch; STYLE.md habit 4). Parameters are replicated,
the global batch is split along its leading axis. Under ``jax.jit`` GSPMD then
computes BatchNorm statistics over the *global* batch.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t2igan_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D data-parallel mesh over the first ``num_devices`` (0: all)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices) or jax.process_count() > 1:
      raise ConfigError(
          f"config.num_devices={num_devices} but {len(devices)} devices in "
          f"{jax.process_count()} process(es); use 0 for all devices")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, field: str) -> None:
  """ConfigError naming ``field`` when the global batch does not split over
  the mesh's devices and processes."""
  n = mesh.devices.size
  processes = jax.process_count()
  if global_batch_size % n or global_batch_size % processes:
    raise ConfigError(
        f"{field}={global_batch_size} is not divisible by the {n} devices "
        f"({processes} process(es)) of the data mesh: use a multiple of {n} "
        "or set config.num_devices")


def device_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
  """Host-local numpy batch -> global jax arrays sharded on the data axis.

  String fields (``keys``) stay on the host and are dropped here.
  """
  sharding = batch_sharded(mesh)

  def put(x):
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return {k: jax.tree.map(put, v) for k, v in local_batch.items()
          if k != "keys"}


def describe_topology() -> str:
  """One line on processes and devices, for the start-of-run log."""
  local = jax.local_devices()
  return (f"process {jax.process_index()}/{jax.process_count()}; "
          f"{jax.device_count()} devices ({len(local)} local: "
          f"{local[0].platform} {local[0].device_kind})")
