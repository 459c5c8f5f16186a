"""docs/ARCHITECTURE.md stays true to the code (no JAX computation here).

Checked references, written in backticks in the document:

* ``path/to/file.py:Symbol`` or ``path.py:Class.method``: the file exists and
  defines that function, class, method or module-level name;
* ``tests/test_x.py::test_name``: the test exists;
* ``config.<field>``: the field exists in ``configs/base.py``'s get_config();
* the quirks table (section 4): each row's field exists with the stated
  default; every same-line ``# ... reference ...`` field of base.py and every
  enumerated field of ``config_validation.CHOICES`` is documented;
* relative links of README.md and the document resolve to files.
"""

import ast
import functools
import pathlib
import re

import pytest

from configs import base
from t2igan_jax import config_validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
README = ROOT / "README.md"

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
  assert defines("t2igan_jax/gan_train.py", "GanModels.generate")
  assert not defines("t2igan_jax/losses/gan.py", "no_such_function")
  assert not defines("t2igan_jax/gan_train.py", "GanModels.no_such_method")
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
  the 'reference' (the convention for quirk flags)."""
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


def test_quirks_table_is_complete(doc):
  documented = {row[0].strip("`") for row in _quirk_rows(doc)}
  flagged = _reference_commented_fields()
  assert len(flagged) >= 10, f"parsed only {flagged} from configs/base.py"
  assert not set(flagged) - documented, (
      f"configs/base.py fields marked as reference behaviour but missing from "
      f"the quirks table of docs/ARCHITECTURE.md: {sorted(set(flagged) - documented)}")


def test_every_enumerated_field_is_mentioned(doc):
  missing = [k for k in config_validation.CHOICES
             if f"`{k}`" not in doc and f"`config.{k}" not in doc]
  assert not missing, (f"config_validation.CHOICES fields not mentioned in "
                       f"docs/ARCHITECTURE.md: {missing}")


# --------------------------------------------------------------------- links
@pytest.mark.parametrize("page", [README, DOC], ids=lambda p: p.name)
def test_relative_links_resolve(page):
  text = page.read_text(encoding="utf-8")
  links = [l for l in LINK.findall(text)
           if not re.match(r"[a-z][a-z0-9+.-]*:|#", l)]
  broken = [l for l in links
            if not (page.parent / l.split("#", 1)[0]).exists()]
  assert not broken, f"{page.name}: broken relative links {broken}"

