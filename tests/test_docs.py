"""docs/ARCHITECTURE.md stays true to the code (no JAX computation here).

Checked references, written in backticks in the document:

* ``path/to/file.py:Symbol`` or ``path.py:Class.method``: the file exists and
  defines that function, class, method or module-level name;
* ``tests/test_x.py::test_name``: the test exists;
* ``config.<field>``: the field exists in ``configs/base.py``'s get_config();
* the quirks table (section 4): each row's field exists with the stated
  default; every field of ``base.QUIRK_FLAGS``, every same-line ``# ...
  reference ...`` field of base.py and every enumerated field of
  ``config_validation.CHOICES`` is documented;
* relative links of README.md and the document resolve to files.

The same reference and link checks run on README.md and every page of docs/,
plus: backticked repository paths there exist; no user-facing text points
outside the repository (``../shared``, the design notes ``SPEC*.md``); the
README opens with exactly the two commands ``make demo`` / ``make test``,
``.ci/run`` runs the second, the README says what each runs, and the first is
run here (tiny config) through the Makefile's own recipe.
"""

import ast
import functools
import importlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from configs import base
from t2igan_jax import config_validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
CI = ROOT / ".ci" / "run"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))
NOTEBOOK_FILES = [ROOT / "notebooks" / "make_notebook.py",
                  ROOT / "notebooks" / "t2igan_colab.ipynb"]

CODE_REF = re.compile(r"`((?:[\w.-]+/)*[\w-]+\.py):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)`")
TEST_REF = re.compile(r"`(tests/(?:[\w-]+/)*test_\w+\.py)::(\w+)`")
CONFIG_REF = re.compile(r"`config\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def doc() -> str:
  assert DOC.is_file(), f"{DOC} is missing"
  return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def base_config():
  return base.get_config()


@functools.lru_cache(maxsize=None)
def _names(path: str) -> dict[str, set[str]]:
  """{'': module-level names, 'Class': names in that class body} of a file."""
  tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)

  def body_names(body) -> set[str]:
    out = set()
    for node in body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        out.add(node.name)
      elif isinstance(node, ast.Assign):
        out.update(t.id for t in node.targets if isinstance(t, ast.Name))
      elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        out.add(node.target.id)
    return out

  names = {"": body_names(tree.body)}
  for node in tree.body:
    if isinstance(node, ast.ClassDef):
      names[node.name] = body_names(node.body)
  return names


def defines(path: str, symbol: str) -> bool:
  """Whether ``path`` (relative to the repo) defines ``symbol`` / ``Class.member``."""
  if not (ROOT / path).is_file():
    return False
  names = _names(path)
  if "." in symbol:
    cls, member = symbol.split(".", 1)
    return member in names.get(cls, set())
  return symbol in names[""]


def config_field(config, dotted: str):
  """The value at ``dotted`` in a ConfigDict; KeyError naming the path if absent."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise KeyError(f"config.{dotted} is not a field of configs/base.py")
    node = node[part]
  return node


def _section(text: str, number: int) -> str:
  m = re.search(rf"^## {number}\..*?(?=^## |\Z)", text, re.S | re.M)
  assert m, f"docs/ARCHITECTURE.md has no section '## {number}.'"
  return m.group(0)


def _table_rows(section: str) -> list[list[str]]:
  """Body rows (below a ``|---`` separator) of the markdown tables in ``section``."""
  rows, in_body = [], False
  for line in section.splitlines():
    line = line.strip()
    if not line.startswith("|"):
      in_body = False
    elif line.startswith("|---"):
      in_body = True
    elif in_body:
      rows.append([c.strip() for c in line.strip("|").split(" | ")])
  return rows


def _quirk_rows(doc: str) -> list[list[str]]:
  rows = _table_rows(_section(doc, 4))
  assert all(len(r) == 6 for r in rows), [r[0] for r in rows if len(r) != 6]
  assert len(rows) >= 20, f"quirks table parsed to {len(rows)} rows"
  return rows


# ---------------------------------------------------------------- references
def test_code_references_exist(doc):
  refs = sorted(set(CODE_REF.findall(doc)))
  assert len(refs) >= 60, f"only {len(refs)} code references parsed"
  missing = [f"{p}:{s}" for p, s in refs if not defines(p, s)]
  assert not missing, f"docs/ARCHITECTURE.md names undefined code: {missing}"


def test_test_references_exist(doc):
  refs = sorted(set(TEST_REF.findall(doc)))
  assert len(refs) >= 40, f"only {len(refs)} test references parsed"
  missing = [f"{p}::{t}" for p, t in refs if not defines(p, t)]
  assert not missing, f"docs/ARCHITECTURE.md names missing tests: {missing}"


def test_config_references_exist(doc, base_config):
  refs = sorted(set(CONFIG_REF.findall(doc)))
  assert len(refs) >= 15, f"only {len(refs)} config references parsed"
  bad = []
  for ref in refs:
    try:
      config_field(base_config, ref)
    except KeyError as e:
      bad.append(str(e))
  assert not bad, bad


def test_checkers_can_fail(base_config):
  """The helpers above reject what does not exist (so the tests can fail)."""
  assert defines("t2igan_jax/losses/gan.py", "bce")
  assert defines("t2igan_jax/gan_lib.py", "GanModels.generate")
  assert not defines("t2igan_jax/losses/gan.py", "no_such_function")
  assert not defines("t2igan_jax/gan_lib.py", "GanModels.no_such_method")
  assert not defines("t2igan_jax/no_such_file.py", "bce")
  assert config_field(base_config, "model.attn_mask_mode") == "rolled"
  with pytest.raises(KeyError, match="config.model.no_such_field"):
    config_field(base_config, "model.no_such_field")


def test_every_equation_row_names_code_and_a_test(doc):
  rows = _table_rows(_section(doc, 3))
  assert all(len(r) == 4 for r in rows), [r[0] for r in rows if len(r) != 4]
  assert len(rows) >= 25, f"equations table parsed to {len(rows)} rows"
  for eq, _, code, test in rows:
    assert CODE_REF.search(code), f"equation {eq!r}: no code reference"
    assert TEST_REF.search(test), f"equation {eq!r}: no test reference"


# -------------------------------------------------------------------- quirks
def test_quirk_defaults_match_base_config(doc, base_config):
  for row in _quirk_rows(doc):
    field, default, code = row[0].strip("`"), row[1].strip("`"), row[4]
    value = config_field(base_config, field)
    stated = ast.literal_eval(default)
    assert type(stated) is type(value) and stated == value, (
        f"quirk {field}: docs say {default}, configs/base.py has {value!r}")
    assert CODE_REF.search(code), f"quirk {field}: no code reference"


def _reference_commented_fields() -> list[str]:
  """Fields of base.get_config() whose assignment line has a comment naming
  the 'reference' (fields like eval.seed; the quirk flags themselves are in
  base.QUIRK_FLAGS)."""
  text = (ROOT / "configs" / "base.py").read_text(encoding="utf-8")
  body = text[text.index("def get_config"):text.index("def tiny")]
  aliases = {"c": ""}
  fields = []
  for line in body.splitlines():
    m = re.match(r"\s+(\w+) = c\.(\w+) = ml_collections\.ConfigDict\(\)", line)
    if m:
      aliases[m.group(1)] = m.group(2) + "."
      continue
    m = re.match(r"\s+(\w+)\.(\w+)\s*=[^#]*#(.*)$", line)
    if m and m.group(1) in aliases and re.search(r"\breference\b", m.group(3)):
      fields.append(aliases[m.group(1)] + m.group(2))
  return fields


def test_quirks_table_is_complete(doc, base_config):
  """Every reference quirk (``configs/base.py:QUIRK_FLAGS``) and every other
  field whose comment in base.py names the reference is in the table."""
  documented = {row[0].strip("`") for row in _quirk_rows(doc)}
  assert len(base.QUIRK_FLAGS) >= 20, base.QUIRK_FLAGS
  for path, default in base.QUIRK_FLAGS.items():
    assert config_field(base_config, path) == default, path
  flagged = list(base.QUIRK_FLAGS) + _reference_commented_fields()
  assert len(flagged) > len(base.QUIRK_FLAGS), "parsed no commented field"
  assert not set(flagged) - documented, (
      f"configs/base.py fields marked as reference behaviour but missing from "
      f"the quirks table of docs/ARCHITECTURE.md: {sorted(set(flagged) - documented)}")


def test_every_enumerated_field_is_mentioned(doc):
  missing = [k for k in config_validation.CHOICES
             if f"`{k}`" not in doc and f"`config.{k}" not in doc]
  assert not missing, (f"config_validation.CHOICES fields not mentioned in "
                       f"docs/ARCHITECTURE.md: {missing}")


# --------------------------------------------------------------------- links
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
  text = page.read_text(encoding="utf-8")
  links = [l for l in LINK.findall(text)
           if not re.match(r"[a-z][a-z0-9+.-]*:|#", l)]
  broken = [l for l in links
            if not (page.parent / l.split("#", 1)[0]).exists()]
  assert not broken, f"{page.name}: broken relative links {broken}"



# ------------------------------------------------- README and docs/ pages
def _is_config_variant(path: str, variant: str) -> bool:
  """Whether ``path:variant`` is a valid ``--config`` (a config file and a
  variant it takes)."""
  if not (path.startswith("configs/") and (ROOT / path).is_file()):
    return False
  module = importlib.import_module(path[:-3].replace("/", "."))
  try:
    module.get_config(variant)
  except base.UnknownVariantError:
    return False
  return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_references_exist(page, base_config):
  """The code, test and config references of every page exist (the counts
  are checked on ARCHITECTURE.md above)."""
  text = page.read_text(encoding="utf-8")
  # `configs/x.py:tiny`, `configs/damsm.py:shapes` are config variants
  # (``--config=configs/x.py:tiny``).
  bad = [f"{p}:{s}" for p, s in set(CODE_REF.findall(text))
         if not defines(p, s) and not _is_config_variant(p, s)]
  bad += [f"{p}::{t}" for p, t in set(TEST_REF.findall(text))
          if not defines(p, t)]
  for ref in set(CONFIG_REF.findall(text)):
    try:
      config_field(base_config, ref)
    except KeyError as e:
      bad.append(str(e))
  assert not bad, f"{page.name} names what does not exist: {sorted(bad)}"


# `configs/x.py`, `docs/a/b.txt`, `bench/results/` ...: paths in this repo.
REPO_PATH = re.compile(
    r"`((?:configs|docs|tests|t2igan_jax|input_pipeline|bench|notebooks)"
    r"/[\w./-]*)(?:::?\w[\w.]*)?`")


def repo_paths(text: str) -> list[str]:
  """Backticked repository paths of ``text``, without patterns (* or {})."""
  return [p for p in REPO_PATH.findall(text) if not re.search(r"[*{<]", p)]


def test_repo_path_checker_can_fail():
  text = ("`configs/base.py`, `docs/example_captions/`, `tests/test_docs.py::x`"
          " `configs/{a,b}.py` `docs/no_such_file.txt`")
  assert repo_paths(text) == ["configs/base.py", "docs/example_captions/",
                              "tests/test_docs.py", "docs/no_such_file.txt"]
  assert not (ROOT / "docs/no_such_file.txt").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_backticked_repository_paths_exist(page):
  text = page.read_text(encoding="utf-8")
  missing = sorted({p for p in repo_paths(text) if not (ROOT / p).exists()})
  assert not missing, f"{page.name} names files not in the repository: {missing}"


# Pointers outside the repository: the real-data folder beside the clone and
# the design notes (SPEC.md, SPEC-dmgan.md, "SPEC §4.1", ...) that a clone
# does not have.
OUTSIDE = re.compile(r"\.\./shared|shared/(?:data|design)|\bSPEC(?:\b|[-.])")


def _user_text_files() -> list[pathlib.Path]:
  return PAGES + NOTEBOOK_FILES


def test_outside_pattern_can_fail():
  for text in ("see ../shared/data/example_captions/", "SPEC.md §4.1",
               "(SPEC-dmgan §8.1)", "SPEC §4.1", "in shared/design/"):
    assert OUTSIDE.search(text), text
  for text in ("a shared filesystem", "/mnt/shared/tfds", "SPECTRAL", "spec"):
    assert not OUTSIDE.search(text), text


@pytest.mark.parametrize("path", _user_text_files(),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_stand_alone(path):
  """README, docs/ and the notebook never send readers outside the clone."""
  lines = path.read_text(encoding="utf-8").splitlines()
  bad = [f"{i}: {l.strip()}" for i, l in enumerate(lines, 1) if OUTSIDE.search(l)]
  assert not bad, f"{path.relative_to(ROOT)} points outside the repository:\n" + (
      "\n".join(bad))


def test_messages_of_the_package_stay_in_the_repository():
  """No error message or docstring of the package points at ../shared."""
  files = [ROOT / "main.py"] + [
      f for d in ("t2igan_jax", "input_pipeline", "configs")
      for f in sorted((ROOT / d).rglob("*.py"))]
  bad = [str(f.relative_to(ROOT)) for f in files
         if "../shared" in f.read_text(encoding="utf-8")]
  assert not bad, f"these files point at ../shared: {bad}"


# --------------------------------------------------- the two commands
def _readme_commands() -> list[str]:
  """The commands of the README's first code block (comments stripped), which
  must come before its first section."""
  text = README.read_text(encoding="utf-8")
  m = re.search(r"^```(?:bash|sh)?\n(.*?)^```", text, re.S | re.M)
  assert m, "README.md has no code block"
  first_section = re.search(r"^## ", text, re.M)
  assert first_section is None or m.start() < first_section.start(), (
      "README.md's first code block comes after its first section")
  return [l.split("#", 1)[0].strip() for l in m.group(1).splitlines()
          if l.split("#", 1)[0].strip()]


def test_readme_opens_with_the_two_commands():
  assert _readme_commands() == ["make demo", "make test"]


def _script_commands(path: pathlib.Path) -> list[str]:
  return [l.split("#", 1)[0].strip()
          for l in path.read_text(encoding="utf-8").splitlines()
          if l.split("#", 1)[0].strip()]


def test_ci_runs_the_readme_test_command():
  test_command = _readme_commands()[1]
  assert test_command in _script_commands(CI), (
      f".ci/run does not run the README's test command {test_command!r}")
  assert "set -euo pipefail" in _script_commands(CI)  # its failure fails CI


def _make_dry_run(target: str, **variables) -> list[str]:
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  args = [f"{k}={v}" for k, v in variables.items()]
  out = subprocess.run(["make", "-n", "--no-print-directory", target, *args],
                       cwd=ROOT, capture_output=True, text=True, check=True)
  return [l for l in out.stdout.splitlines() if l.strip()]


def _stated_command(target: str) -> str:
  """What the README says ``make <target>`` runs: "`make x` runs `cmd`"."""
  text = " ".join(README.read_text(encoding="utf-8").split())
  m = re.search(rf"`make {target}` runs `([^`]+)`", text)
  assert m, f"README.md does not say what `make {target}` runs"
  return m.group(1)


@pytest.mark.parametrize("target", ["demo", "test"])
def test_readme_says_what_each_command_runs(target, tmp_path):
  """The README's "`make demo` runs `python main.py ...`" is the Makefile's
  last recipe line (with an installed venv; its python called `python`)."""
  venv = tmp_path / "venv"
  venv.mkdir()
  for stamp in (".installed-project", ".installed", ".installed-test"):
    (venv / stamp).touch()   # newer than requirements.txt: nothing to install
  lines = _make_dry_run(target, VENV=venv)
  assert len(lines) == 1, f"make -n {target} would also run {lines[:-1]}"
  run = lines[-1].replace(f"{venv}/bin/python", "python", 1)
  stated = _stated_command(target)
  assert run == stated or run.startswith(stated + " "), (
      f"README says `make {target}` runs {stated!r}; the Makefile runs {run!r}")


@pytest.mark.slow
def test_readme_demo_command_runs(tmp_path):
  """``make demo`` itself (its recipe, this interpreter as the venv's python)
  on the tiny variant of the README's config trains the DAMSM and the GAN."""
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  from main_process import subprocess_env  # pylint: disable=g-import-not-at-top
  stated = shlex.split(_stated_command("demo"))
  config = next(a.split("=", 1)[1] for a in stated if a.startswith("--config="))
  venv, workdir = tmp_path / "venv", tmp_path / "demo"
  venv.mkdir()
  for stamp in (".installed-project", ".installed"):
    (venv / stamp).touch()
  env = subprocess_env(os.environ["JAX_COMPILATION_CACHE_DIR"], devices=1)
  run = subprocess.run(
      ["make", "--no-print-directory", "demo", f"VENV={venv}",
       f"PY={sys.executable}", f"CONFIG={config}:tiny", f"WORKDIR={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  assert f"main.py --config={config}:tiny" in run.stdout
  assert (workdir / "damsm" / "checkpoints").is_dir(), sorted(workdir.iterdir())
  steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert steps and steps[-1].isdigit() and int(steps[-1]) > 0, steps
