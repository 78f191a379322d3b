"""User-facing errors: one clear line, naming what is wrong and what was expected."""


class JaxlabError(Exception):
  """An error caused by the user's input (config, data, workdir, checkpoint).

  Launchers print ``str(err)`` as a single line and exit with status 2, never a traceback.
  """


class ConfigError(JaxlabError):
  """A config key is unknown, of the wrong type, or inconsistent with another."""


class CheckpointError(JaxlabError):
  """A checkpoint directory cannot be read or does not match the run."""


class WorkdirError(JaxlabError):
  """The workdir cannot be created or written."""


class DataError(JaxlabError):
  """A dataset directory, file or record is missing or not in the expected format."""
