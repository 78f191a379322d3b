"""The answer format (spec §2.3): one tool call with an integer point in the resized frame.

    <tool_call>
    {"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [x, y]}}
    </tool_call>

:func:`parse` never raises: whatever a model writes becomes a :class:`Parsed`. Two readings
exist, each the one of the paper's own code, because the numbers a user compares with were
computed with them:

* the reward's (``fallback=False``): the JSON of the first CLOSED call block; its
  ``arguments.coordinate`` must be exactly two integers, else there is no point (the reward
  scores it as (0, 0)). A block whose JSON is not an object, or whose ``arguments`` is not
  one, makes the paper's reward fail, and a failure scores -1: :attr:`Parsed.error`. A
  completion cut off before ``</tool_call>`` has no point.
* the evaluation's (``fallback=True``): the first call block, closed or not (read to the end
  of the text); ``arguments.coordinate``, two numbers truncated to integers as ``int()`` does
  (``[150.7, 70.2]`` -> (150, 70)); only when the block is not JSON at all, exactly two
  unsigned integers found in it (``-1`` reads as 1 there, as in the reference evaluator).
  A JSON block of another shape has no point.

:attr:`Parsed.well_formed` is the reward's logged format check under either reading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
TOOL_NAME = "computer_use"
_DIGITS = re.compile(r"\d+")


@dataclasses.dataclass(frozen=True)
class Parsed:
  """What a model answer says.

  Attributes:
    point: (x, y) integers in the resized frame, or None when no point could be read.
    well_formed: exactly one call block, the tool's name, an ``action`` and an integer
      ``coordinate`` pair (the reward's logged format check; it does not change the score).
    error: the reward's reading only: the call's JSON is not an object (or its
      ``arguments`` is not one), where the paper's reward fails and scores -1.
  """
  point: tuple[int, int] | None
  well_formed: bool
  error: bool = False


def format_answer(x: int, y: int, action: str = "left_click") -> str:
  """The target text of a point (SFT completions, fixtures)."""
  call = {"name": TOOL_NAME, "arguments": {"action": action, "coordinate": [int(x), int(y)]}}
  return f"{OPEN}\n{json.dumps(call)}\n{CLOSE}"


def _first_block(text: str, closed: bool) -> str | None:
  """The text between the first ``<tool_call>`` and the next ``</tool_call>``; without a
  closing tag: None when ``closed``, else the rest of the text."""
  start = text.find(OPEN)
  if start < 0:
    return None
  body = text[start + len(OPEN):]
  end = body.find(CLOSE)
  if end < 0:
    return None if closed else body
  return body[:end]


_NOT_JSON = object()
_TOO_DEEP = object()  # not an object: read as JSON of the wrong shape (the reference raises)


def _load(block: str) -> Any:
  """The block's JSON value, :data:`_NOT_JSON` when it does not decode, :data:`_TOO_DEEP`
  when it nests too deep to decode (the reference code does not catch that error)."""
  try:
    return json.loads(block.strip())
  except RecursionError:
    return _TOO_DEEP
  except ValueError:
    return _NOT_JSON


def _int_pair(value: Any) -> tuple[int, int] | None:
  if (isinstance(value, list) and len(value) == 2
      and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
    return int(value[0]), int(value[1])
  return None


def _truncated_pair(value: Any) -> tuple[int, int] | None:
  """Two numbers as ``int()`` reads them (floats truncated toward zero), else None."""
  if not (isinstance(value, list) and len(value) == 2):
    return None
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             for v in value):
    return None
  return int(value[0]), int(value[1])


def _arguments(call: Any) -> dict[str, Any] | None:
  """The call's ``arguments`` object ({} when absent), or None when the call or its
  arguments are not objects."""
  if not isinstance(call, dict):
    return None
  args = call.get("arguments", {})
  return args if isinstance(args, dict) else None


def _reward_reading(text: str) -> Parsed:
  block = _first_block(text, closed=True)
  if block is None:
    return Parsed(None, False)
  call = _load(block)
  if call is _NOT_JSON:
    return Parsed(None, False)
  args = _arguments(call)
  if args is None:
    return Parsed(None, False, error=True)
  point = _int_pair(args.get("coordinate"))
  well_formed = (point is not None and text.count(OPEN) == 1 and text.count(CLOSE) == 1
                 and call.get("name") == TOOL_NAME and "action" in args)
  return Parsed(point, well_formed)


def _evaluation_point(text: str) -> tuple[int, int] | None:
  block = _first_block(text, closed=False)
  if block is None:
    return None
  call = _load(block)
  if call is _NOT_JSON:
    digits = _DIGITS.findall(block)
    return (int(digits[0]), int(digits[1])) if len(digits) == 2 else None
  args = _arguments(call)
  return None if args is None else _truncated_pair(args.get("coordinate"))


def parse(text: Any, *, fallback: bool = False) -> Parsed:
  """Reads a model answer; never raises.

  Args:
    text: the completion (anything that is not a string is a format failure).
    fallback: the evaluation's reading instead of the reward's (module docstring).
  """
  if not isinstance(text, str):
    return Parsed(None, False)
  parsed = _reward_reading(text)
  if not fallback:
    return parsed
  return Parsed(_evaluation_point(text), parsed.well_formed)
