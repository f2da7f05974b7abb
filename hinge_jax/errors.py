"""User-facing errors: one line that names the problem and the fix."""


class UserError(ValueError):
  """Bad input from the user (config, data, workdir): reported as one line, exit code 2."""


class ConfigError(UserError):
  """A config field has a value the codebase cannot use."""


class DataError(UserError):
  """A dataset is missing, corrupt or holds values the model cannot train on."""


class DivergedError(RuntimeError):
  """Training produced a NaN or infinite loss (exit code 3)."""

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


class Interrupted(RuntimeError):
  """SIGINT/SIGTERM stopped training after a checkpoint was saved (exit code 128 + signal)."""

  def __init__(self, signum: int, step: int, message: str):
    super().__init__(message)
    self.signum = signum
    self.step = step
