"""DF-GAN checkpoint import against modules built with real torch.

The torch modules below are this test's own small definitions written from
SPEC-dfgan (NetG / NetD / NetC with their state-dict layout), at nf 4, z 8,
cond 6, 64 px (so D has one fin == fout block with a dead ``conv_s``). Their
affine ``linear2`` weights and D's ``gamma`` are randomised, so an identity-at-
init layer cannot hide a mapping error. One Adam step (torch) fills the
optimiser states; the file is written by ``torch.save`` in the official
``state_epoch_*.pth`` layout with DDP's ``module.`` prefix.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2igan_jax import dfgan_lib
from t2igan_jax import dfgan_torch
from t2igan_jax.errors import CheckpointError

torch = pytest.importorskip("torch")
tnn = torch.nn

NF, Z, COND, IMSIZE, B = 4, 8, 6, 64, 3
CFG = dfgan_lib.DfganConfig(nf=NF, z_dim=Z, cond_dim=COND, imsize=IMSIZE)


def widths(nf, imsize):
  return [nf * min(2 ** i, 8) for i in range(int(np.log2(imsize)) - 1)]


class TAffine(tnn.Module):
  def __init__(self, cond, c):
    super().__init__()
    mlp = lambda: tnn.Sequential(collections.OrderedDict(
        linear1=tnn.Linear(cond, c), relu1=tnn.ReLU(), linear2=tnn.Linear(c, c)))
    self.fc_gamma, self.fc_beta = mlp(), mlp()

  def forward(self, x, y):
    return self.fc_gamma(y)[:, :, None, None] * x + self.fc_beta(y)[:, :, None, None]


class TDFBlock(tnn.Module):
  def __init__(self, cond, c):
    super().__init__()
    self.affine0, self.affine1 = TAffine(cond, c), TAffine(cond, c)

  def forward(self, x, y):
    lrelu = lambda v: tnn.functional.leaky_relu(v, 0.2)
    return lrelu(self.affine1(lrelu(self.affine0(x, y)), y))


class TGBlock(tnn.Module):
  def __init__(self, cond, cin, cout):
    super().__init__()
    self.c1 = tnn.Conv2d(cin, cout, 3, 1, 1)
    self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1)
    self.fuse1, self.fuse2 = TDFBlock(cond, cin), TDFBlock(cond, cout)
    if cin != cout:
      self.c_sc = tnn.Conv2d(cin, cout, 1)

  def forward(self, x, y):
    x = tnn.functional.interpolate(x, scale_factor=2)
    h = self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))
    return (self.c_sc(x) if hasattr(self, "c_sc") else x) + h


class TNetG(tnn.Module):
  def __init__(self):
    super().__init__()
    self.fc = tnn.Linear(Z, 8 * NF * 16)
    w = widths(NF, IMSIZE)[::-1]
    self.GBlocks = tnn.ModuleList(TGBlock(Z + COND, a, b) for a, b in zip(w[:-1], w[1:]))
    self.to_rgb = tnn.Sequential(tnn.LeakyReLU(0.2), tnn.Conv2d(NF, 3, 3, 1, 1), tnn.Tanh())

  def forward(self, z, s):
    h = self.fc(z).view(len(z), 8 * NF, 4, 4)
    y = torch.cat([z, s], 1)
    for block in self.GBlocks:
      h = block(h, y)
    return self.to_rgb(h)


class TDBlock(tnn.Module):
  def __init__(self, fin, fout):
    super().__init__()
    self.conv_r = tnn.Sequential(
        tnn.Conv2d(fin, fout, 4, 2, 1, bias=False), tnn.LeakyReLU(0.2),
        tnn.Conv2d(fout, fout, 3, 1, 1, bias=False), tnn.LeakyReLU(0.2))
    self.conv_s = tnn.Conv2d(fin, fout, 1)
    self.gamma = tnn.Parameter(torch.zeros(1))
    self.learned = fin != fout

  def forward(self, x):
    sc = self.conv_s(x) if self.learned else x
    return tnn.functional.avg_pool2d(sc, 2) + self.gamma * self.conv_r(x)


class TNetD(tnn.Module):
  def __init__(self):
    super().__init__()
    self.conv_img = tnn.Conv2d(3, NF, 3, 1, 1)
    w = widths(NF, IMSIZE)
    self.DBlocks = tnn.ModuleList(TDBlock(a, b) for a, b in zip(w[:-1], w[1:]))

  def forward(self, x):
    h = self.conv_img(x)
    for block in self.DBlocks:
      h = block(h)
    return h


class TNetC(tnn.Module):
  def __init__(self):
    super().__init__()
    self.joint_conv = tnn.Sequential(
        tnn.Conv2d(8 * NF + COND, 2 * NF, 3, 1, 1, bias=False), tnn.LeakyReLU(0.2),
        tnn.Conv2d(2 * NF, 1, 4, 1, 0, bias=False))

  def forward(self, f, s):
    return self.joint_conv(torch.cat([f, s[:, :, None, None].repeat(1, 1, 4, 4)], 1))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  torch.manual_seed(0)
  g, d, c = TNetG(), TNetD(), TNetC()
  with torch.no_grad():
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
      if "linear2" in name or name.endswith("gamma"):
        p.normal_(0.0, 0.2)
  opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
  opt_d = torch.optim.Adam(list(d.parameters()) + list(c.parameters()), lr=4e-4,
                           betas=(0.0, 0.9))
  z, s = torch.randn(B, Z), torch.randn(B, COND)
  x = torch.rand(B, 3, IMSIZE, IMSIZE) * 2 - 1
  c(d(x), s).mean().backward()
  opt_d.step()
  (-c(d(g(z, s)), s).mean()).backward()
  opt_g.step()
  ddp = lambda m: collections.OrderedDict(("module." + k, v) for k, v in m.state_dict().items())
  osd_d = opt_d.state_dict()
  for entry in osd_d["state"].values():   # torch 1.9 stored an int step
    entry["step"] = int(entry["step"])
  obj = {"model": {"netG": ddp(g), "netD": ddp(d), "netC": ddp(c)},
         "optimizers": {"optimizer_G": opt_g.state_dict(), "optimizer_D": osd_d},
         "epoch": 7}
  path = tmp_path_factory.mktemp("dfgan") / "state_epoch_007.pth"
  torch.save(obj, path)
  return dict(path=str(path), g=g, d=d, c=c, opt_g=opt_g, z=z, s=s, x=x)


@pytest.fixture(scope="module")
def loaded(ckpt):
  return dfgan_torch.load_checkpoint(ckpt["path"], CFG)


def test_every_key_consumed(ckpt, loaded):
  assert loaded["unconsumed"] == []
  assert loaded["epoch"] == 7
  back = dfgan_torch.state_dicts_from_params(loaded["g_params"], loaded["d_params"])
  for name in ("g", "d", "c"):
    sd = ckpt[name].state_dict()
    net = back["net" + name.upper()]
    assert set(net) == set(sd)
    for k, v in sd.items():
      np.testing.assert_array_equal(net[k], v.numpy(), err_msg=k)


def test_forward_equals_torch(ckpt, loaded):
  g, d, c = dfgan_lib.models(CFG)
  z, s, x = (jnp.asarray(t.numpy()) for t in (ckpt["z"], ckpt["s"], ckpt["x"]))
  with torch.no_grad():
    want_img = ckpt["g"](ckpt["z"], ckpt["s"])
    want_feat = ckpt["d"](ckpt["x"])
    want_logit = ckpt["c"](want_feat, ckpt["s"])
  img = g.apply({"params": loaded["g_params"]}, z, s)
  np.testing.assert_allclose(img, nhwc(want_img), rtol=1e-4, atol=1e-4)
  assert float(jnp.std(img)) > 1e-2
  feat = d.apply({"params": loaded["d_params"]["netD"]}, jnp.asarray(nhwc(ckpt["x"])))
  np.testing.assert_allclose(feat, nhwc(want_feat), rtol=1e-4, atol=1e-4)
  logit = c.apply({"params": loaded["d_params"]["netC"]}, jnp.asarray(nhwc(want_feat)), s)
  np.testing.assert_allclose(logit, want_logit.numpy().reshape(B), rtol=1e-4, atol=1e-4)


def test_optimizer_states(ckpt, loaded):
  adam_g, adam_d = loaded["g_opt"][0], loaded["d_opt"][0]
  assert int(adam_g.count) == 1 and int(adam_d.count) == 1
  st = ckpt["opt_g"].state_dict()["state"][0]       # fc.weight
  np.testing.assert_array_equal(adam_g.mu["fc"]["kernel"], st["exp_avg"].numpy().T)
  np.testing.assert_array_equal(adam_g.nu["fc"]["kernel"], st["exp_avg_sq"].numpy().T)
  dead = adam_d.mu["netD"]["DBlocks_3"]["conv_s"]["kernel"]   # no state in torch
  np.testing.assert_array_equal(dead, 0.0)
  assert np.abs(adam_d.mu["netC"]["joint_conv_0"]["kernel"]).max() > 0


def test_next_adam_step_equals_torch(ckpt, loaded):
  """A second G step from the imported state equals torch's on the same gradients."""
  g, opt = ckpt["g"], ckpt["opt_g"]
  before = {k: v.clone() for k, v in g.state_dict().items()}
  opt.zero_grad()
  g(ckpt["z"], ckpt["s"]).square().mean().backward()
  grads = {k: p.grad.clone() for k, p in g.named_parameters()}
  opt.step()
  shapes = jax.eval_shape(lambda: loaded["g_params"])
  flax_grads, _ = dfgan_torch.params_from_state_dict(
      {k: v.numpy() for k, v in grads.items()}, shapes, what="grads")
  g_tx, _ = dfgan_lib.make_optimizers(CFG)
  updates, _ = g_tx.update(flax_grads, loaded["g_opt"], loaded["g_params"])
  new = jax.tree.map(lambda p, u: p + u, loaded["g_params"], updates)
  back = dfgan_torch.state_dicts_from_params(new, loaded["d_params"])["netG"]
  for k, v in g.state_dict().items():
    np.testing.assert_allclose(back[k], v.numpy(), rtol=1e-5, atol=1e-7, err_msg=k)
  assert not np.array_equal(back["fc.weight"], before["fc.weight"].numpy())


def test_wrong_config_names_keys(ckpt):
  with pytest.raises(CheckpointError, match=r"netG does not fit.*GBlocks.0.c1.bias has torch shape "
                     r"\(32,\), expected \(64,\).* and \d+ more"):
    dfgan_torch.load_checkpoint(ckpt["path"], dfgan_lib.DfganConfig(
        nf=8, z_dim=Z, cond_dim=COND, imsize=IMSIZE))
  with pytest.raises(CheckpointError,
                     match=r"missing keys: GBlocks.4.c1.bias, GBlocks.4.c1.weight"):
    dfgan_torch.load_checkpoint(ckpt["path"], dfgan_lib.DfganConfig(
        nf=NF, z_dim=Z, cond_dim=COND, imsize=128))


def test_convert_writes_a_workdir_that_samples_and_trains(ckpt, tmp_path):
  """``convert`` with a DF-GAN config: the state_epoch file above becomes
  checkpoint step 0; job=sample's generator is torch's G; train_gan resumes."""
  from test_convert import Params, np_text_encoder, save_torch  # pylint: disable=g-import-not-at-top
  from configs import gan  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import convert, gan_lib, generation, train  # pylint: disable=g-import-not-at-top
  c = gan.get_config("dfgan,shapes,tiny")
  c.model.ngf, c.model.z_dim = NF, Z
  c.text_encoder.embedding_dim, c.data.base_size = COND, IMSIZE
  vocab = pipeline.get_source(c, "train", IMSIZE).vocab
  pt = Params(seed=4)
  np_text_encoder(pt, np.ones((1, 3), np.int32), np.array([3]), vocab.n_words,
                  c.text_encoder.word_dim, COND // 2)
  text = save_torch(pt.sd, tmp_path / "text_encoder200.pth", True)
  workdir = str(tmp_path / "w")
  record = convert.convert(c, workdir, netG=ckpt["path"], text_encoder=text)
  assert (record["architecture"], record["source_epoch"], record["step"],
          record["optimizers"], record["unconsumed"]) == (
              "dfgan", 7, 0, "converted", [])
  c.job = "sample"
  gen = gan_lib.restore_generator(c, workdir)
  out = generation.generate(gen, ["a red circle", "a big green star"],
                            key=jax.random.key(0))
  ids, lengths = generation.token_batch(["a red circle", "a big green star"],
                                        vocab)
  _, sent = gen.models.encode_text(gen.enc, jnp.asarray(ids),
                                   jnp.asarray(lengths))
  net_g = TNetG()   # the file's G (other tests step ckpt['g'] further)
  saved = torch.load(ckpt["path"])["model"]["netG"]
  net_g.load_state_dict({k[len("module."):]: v for k, v in saved.items()})
  with torch.no_grad():
    want = net_g(torch.tensor(np.asarray(out.z)),
                 torch.tensor(np.asarray(sent)))
  np.testing.assert_allclose(np.asarray(out.images[0]), nhwc(want), atol=2e-5)
  captions = tmp_path / "captions.txt"
  captions.write_text("a red circle\n")
  c.sample.captions_file, c.sample.output_dir = str(captions), str(tmp_path / "s")
  assert train.run(c, workdir)["num_sampled"] == 1
  c.job, c.max_steps, c.image_every_steps = "train_gan", 1, 100
  assert train.run(c, workdir)["step"] == 1
  with pytest.raises(ValueError, match="--netD: a DF-GAN state_epoch"):
    convert.convert(c, str(tmp_path / "w2"), netG=ckpt["path"],
                    text_encoder=text, netD=[ckpt["path"]])
