"""Errors that mean "the user's input is wrong", reported as one line by main.py."""


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


class DataError(ValueError):
  """A data file or directory is missing or malformed; the message names it."""


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used; the message names it."""


# Caught by main.py and reported as a single line (no traceback).
USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError,
               FloatingPointError, NotImplementedError, ValueError)
