"""The error every model family raises for a bad model directory (config, weights, tokenizer)."""

from __future__ import annotations

from jaxlab.core.errors import CheckpointError


class ModelConfigError(CheckpointError, ValueError):
  """A model directory cannot be mapped onto one of our model families.

  It is a ``ValueError`` (what callers of a loader expect) and a ``JaxlabError`` (so launchers
  print it as one line and exit with status 2). The message names the file and the field or
  tensor at fault.
  """
