"""Errors that mean "the user's input is wrong", reported as one line by main.py."""


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used; the message names it."""


class WorkdirError(RuntimeError):
  """The workdir cannot be created, written or has too little free space."""


# Caught by main.py and reported as a single line (no traceback).
# (ConfigError is a ValueError; data readers raise ValueError/FileNotFoundError
# naming the file.)
USER_ERRORS = (ValueError, CheckpointError, WorkdirError, FileNotFoundError,
               FloatingPointError, NotImplementedError)
