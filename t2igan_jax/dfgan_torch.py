"""Import (and export) DF-GAN's PyTorch checkpoints, without torch.

The official ``code/lib/utils.py`` ``save_models`` writes ``state_epoch_%03d.pth``::

    {'model': {'netG': sd, 'netD': sd, 'netC': sd},
     'optimizers': {'optimizer_G': osd, 'optimizer_D': osd}, 'epoch': int}

Released files were saved under DDP, so every state-dict key may start with
``module.`` (stripped here). Key mapping (``models/dfgan.py``): a Flax path's
``name_<digit>`` parts become ``name.<digit>``, ``kernel`` becomes ``weight``
(Conv HWIO <- OIHW, Dense (I, O) <- Linear (O, I)); e.g.
``GBlocks_3/fuse1/affine0/fc_gamma/linear1/kernel`` <->
``GBlocks.3.fuse1.affine0.fc_gamma.linear1.weight``, ``DBlocks_0/gamma`` <->
``DBlocks.0.gamma``. Every key is either mapped or returned as unconsumed.

Optimiser states (torch Adam, ``{'state': {i: {'step', 'exp_avg',
'exp_avg_sq'}}, 'param_groups': [...]}``): index i follows ``named_parameters()``,
which for these nets is the state-dict order (own parameters first, no
buffers); optimizer_D indexes netD's parameters, then netC's. Parameters with no
state (the dead ``conv_s`` of D) get zero moments, which is what Adam holds for a
parameter whose gradient has always been zero. ``step`` is an int (torch 1.9) or
a tensor (newer torch); it becomes optax's single ``count``.
"""

import re
from typing import Any, Mapping

import jax
import numpy as np

from t2igan_jax import dfgan_lib
from t2igan_jax import torch_io
from t2igan_jax.errors import CheckpointError


def torch_key(path: tuple[str, ...]) -> str:
  """Flax parameter path -> torch state-dict key (module docstring)."""
  modules = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]
  return ".".join(modules + [{"kernel": "weight"}.get(path[-1], path[-1])])


def to_flax(value: np.ndarray) -> np.ndarray:
  """torch layout -> Flax layout: OIHW -> HWIO, (O, I) -> (I, O), else unchanged."""
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value.T if value.ndim == 2 else value


def to_torch(value: np.ndarray) -> np.ndarray:
  """Flax layout -> torch layout (inverse of ``to_flax``)."""
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  return value.T if value.ndim == 2 else value


def _paths(tree) -> list[tuple[tuple[str, ...], Any]]:
  return [(tuple(str(k.key) for k in path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _set(tree: dict, keys: tuple, value) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def _fmt(items: list[str], limit: int = 8) -> str:
  more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


def strip_module(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the ``module.`` prefix (DataParallel / DDP) when every key has it."""
  if sd and all(k.startswith("module.") for k in sd):
    return {k[len("module."):]: v for k, v in sd.items()}
  return dict(sd)


def params_from_state_dict(sd: Mapping[str, np.ndarray], shapes, *, what: str,
                           source: str = "checkpoint"):
  """Flax params shaped like ``shapes`` from one torch state dict.

  Returns ``(params, unconsumed_keys)``. Raises CheckpointError naming the
  missing keys and the shape mismatches (the first 8 of each).
  """
  sd = strip_module(sd)
  params, missing, mismatched = {}, [], []
  for path, leaf in _paths(shapes):
    key = torch_key(path)
    if key not in sd:
      missing.append(key)
      continue
    value = to_flax(sd[key])
    if value.shape != tuple(leaf.shape):
      mismatched.append(f"{key} has torch shape {tuple(np.shape(sd[key]))}, expected "
                        f"{tuple(to_torch(np.zeros(leaf.shape)).shape)}")
      continue
    _set(params, path, value)
  if missing or mismatched:
    raise CheckpointError(
        f"{source}: {what} does not fit the DF-GAN config (nf, z_dim, cond_dim, "
        f"imsize): " + "; ".join(
            f"{title}: {_fmt(items)}" for title, items in
            (("missing keys", missing), ("shape mismatches", mismatched)) if items))
  used = {torch_key(p) for p, _ in _paths(shapes)}
  return params, sorted(k for k in sd if k not in used)


def params_from_state_dicts(net_g, net_d, net_c, config: dfgan_lib.DfganConfig, *,
                            source: str = "checkpoint"):
  """``(g_params, {'netD', 'netC'}, unconsumed)`` from the three state dicts.

  ``unconsumed`` lists keys (prefixed ``netG.``/``netD.``/``netC.``) that no
  Flax parameter takes; empty for a file of the same config.
  """
  g_shapes, d_shapes = jax.eval_shape(
      lambda k: dfgan_lib.init_params(config, k), jax.random.key(0))
  g, left_g = params_from_state_dict(net_g, g_shapes, what="netG", source=source)
  d, left_d = params_from_state_dict(net_d, d_shapes["netD"], what="netD", source=source)
  c, left_c = params_from_state_dict(net_c, d_shapes["netC"], what="netC", source=source)
  unconsumed = ([f"netG.{k}" for k in left_g] + [f"netD.{k}" for k in left_d]
                + [f"netC.{k}" for k in left_c])
  return g, {"netD": d, "netC": c}, unconsumed


def state_dicts_from_params(g_params, d_params) -> dict[str, dict[str, np.ndarray]]:
  """The inverse: ``{'netG', 'netD', 'netC'}`` torch-layout state dicts (no prefix)."""
  def sd(tree):
    return {torch_key(p): to_torch(v) for p, v in _paths(tree)}
  return {"netG": sd(g_params), "netD": sd(d_params["netD"]),
          "netC": sd(d_params["netC"])}


def _scalar(value, where: str) -> float:
  """A Python number or a 0-d tensor (torch >= 1.12 stores Adam's step so)."""
  if isinstance(value, (int, float)):
    return value
  arr = torch_io.flatten({"v": value}).get("v")
  if arr is None or arr.size != 1:
    raise CheckpointError(f"{where}: expected a number or a 1-element tensor")
  return arr.reshape(()).item()


def adam_state_from_torch(osd: Mapping[str, Any], param_keys: list[str], params, tx, *,
                          what: str, source: str = "checkpoint"):
  """optax Adam state for ``params`` from a torch Adam ``state_dict()``.

  ``param_keys``: ``torch_key`` of each parameter path of ``params``, in the
  optimiser's index order (the state-dict order). Moments of parameters without
  state are zero; every parameter with state must share one ``step``.
  """
  template = tx.init(params)
  path_of = {torch_key(p): p for p, _ in _paths(params)}
  mu = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
  nu = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
  groups = osd.get("param_groups", [])
  n_indexed = sum(len(g.get("params", [])) for g in groups)
  if n_indexed != len(param_keys):
    raise CheckpointError(f"{source}: {what} indexes {n_indexed} parameters, "
                          f"the nets have {len(param_keys)}")
  steps = set()
  for index, entry in osd.get("state", {}).items():
    key = param_keys[int(index)]
    arrays = torch_io.flatten(entry)
    for name, tree in (("exp_avg", mu), ("exp_avg_sq", nu)):
      if name not in arrays:
        raise CheckpointError(f"{source}: {what} state {index} ({key}) has no {name}")
      _set(tree, path_of[key], to_flax(arrays[name]))
    steps.add(int(_scalar(entry.get("step"), f"{source}: {what} state {index} step")))
  if len(steps) > 1:
    raise CheckpointError(f"{source}: {what} has parameters at different Adam steps "
                          f"{sorted(steps)}")
  count = steps.pop() if steps else 0
  adam = template[0]._replace(count=np.asarray(count, np.int32), mu=mu, nu=nu)
  return (adam,) + tuple(template[1:])


def load_checkpoint(path: str, config: dfgan_lib.DfganConfig) -> dict[str, Any]:
  """Reads an official ``state_epoch_*.pth`` into Flax params and optax states.

  Returns ``{'g_params', 'd_params', 'g_opt', 'd_opt', 'epoch', 'unconsumed'}``;
  ``g_opt`` / ``d_opt`` are None when the file has no ``optimizers`` entry;
  ``unconsumed`` lists every tensor key of the file that was not used.
  """
  obj = torch_io.load_object(path)
  if not isinstance(obj, dict) or "model" not in obj:
    raise CheckpointError(f"{path}: not a DF-GAN checkpoint (no 'model' entry; "
                          f"expected {{'model': {{'netG', 'netD', 'netC'}}, ...}})")
  model = obj["model"]
  sds = {}
  for name in ("netG", "netD", "netC"):
    if name not in model:
      raise CheckpointError(f"{path}: 'model' has no {name!r}")
    sds[name] = strip_module(torch_io.flatten(model[name]))
  g, d, unconsumed = params_from_state_dicts(sds["netG"], sds["netD"], sds["netC"],
                                             config, source=path)
  unconsumed += [f"model.{k}" for k in model if k not in sds]
  unconsumed += [k for k in obj if k not in ("model", "optimizers", "epoch")]
  g_tx, d_tx = dfgan_lib.make_optimizers(config)
  opts = obj.get("optimizers")
  g_opt = d_opt = None
  if opts is not None:
    for name in ("optimizer_G", "optimizer_D"):
      if name not in opts:
        raise CheckpointError(f"{path}: 'optimizers' has no {name!r}")
    g_opt = adam_state_from_torch(opts["optimizer_G"], list(sds["netG"]), g, g_tx,
                                  what="optimizer_G", source=path)
    d_keys = [f"netD.{k}" for k in sds["netD"]] + [f"netC.{k}" for k in sds["netC"]]
    d_opt = adam_state_from_torch(opts["optimizer_D"], d_keys, d, d_tx,
                                  what="optimizer_D", source=path)
  epoch = obj.get("epoch")
  return {"g_params": g, "d_params": d, "g_opt": g_opt, "d_opt": d_opt,
          "epoch": None if epoch is None else int(_scalar(epoch, f"{path}: epoch")),
          "unconsumed": unconsumed}
