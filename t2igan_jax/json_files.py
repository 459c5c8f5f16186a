"""Reading the JSON files the project writes, naming the file and line when
one is damaged (``damsm_config.json``, ``vocab.json``, ``metrics.json``,
``losses.jsonl``)."""

import json
import os
from typing import Any


class DamagedFileError(ValueError):
  """A file the project wrote cannot be read; the message names the file, the
  line and what to do (a ValueError: main.py prints it as one line)."""


def read_json(path: str, fix: str, expected: type = dict) -> Any:
  """The JSON value in ``path``, of type ``expected``.

  Raises DamagedFileError naming ``path``, the line and column of the first
  error and ``fix`` (what the user can do) when the file is not UTF-8 JSON of
  that type.
  """
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise DamagedFileError(f"{path} is damaged (not UTF-8 text at byte "
                           f"{e.start}); {fix}") from None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    what = "is empty" if not text.strip() else (
        f"is damaged: {e.msg} at line {e.lineno} column {e.colno}")
    raise DamagedFileError(f"{path} {what}; {fix}") from None
  if not isinstance(value, expected):
    raise DamagedFileError(
        f"{path} is damaged: it holds a JSON {type(value).__name__}, not a "
        f"{expected.__name__}; {fix}")
  return value


def read_json_records(path: str) -> list[Any]:
  """The list of records in ``path`` (e.g. metrics.json); [] if absent."""
  if not os.path.exists(path):
    return []
  return read_json(
      path, "move it aside (it holds only the evaluation records; the "
      "checkpoints are intact) and start again: a new one is written",
      expected=list)


def step_record(line: str) -> dict[str, Any] | None:
  """The record of one step-log line, or None when it is not one."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  if (isinstance(record, dict) and isinstance(record.get("step"), int)
      and not isinstance(record["step"], bool)):
    return record
  return None
