"""The answer format (spec §2.3): one tool call with an integer point in the resized frame.

    <tool_call>
    {"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [x, y]}}
    </tool_call>

:func:`parse` never raises: whatever a model writes becomes a :class:`Parsed` with the point
(or ``None``) and whether the answer is well formed. Two readings exist, as in the paper's
code: the reward's (``arguments.coordinate`` of the first call's JSON, exactly two integers,
else no point) and the evaluation's, which falls back to "exactly two integers inside the
first call block" when its JSON does not parse.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
TOOL_NAME = "computer_use"
_INT = re.compile(r"-?\d+")


@dataclasses.dataclass(frozen=True)
class Parsed:
  """What a model answer says.

  Attributes:
    point: (x, y) integers in the resized frame, or None when no point could be read.
    well_formed: exactly one call block, the tool's name, an ``action`` and an integer
      ``coordinate`` pair (the reward's logged format check; it does not change the score).
  """
  point: tuple[int, int] | None
  well_formed: bool


def format_answer(x: int, y: int, action: str = "left_click") -> str:
  """The target text of a point (SFT completions, fixtures)."""
  call = {"name": TOOL_NAME, "arguments": {"action": action, "coordinate": [int(x), int(y)]}}
  return f"{OPEN}\n{json.dumps(call)}\n{CLOSE}"


def _first_block(text: str) -> str | None:
  start = text.find(OPEN)
  if start < 0:
    return None
  body = text[start + len(OPEN):]
  end = body.find(CLOSE)
  return body if end < 0 else body[:end]


def _int_pair(value: Any) -> tuple[int, int] | None:
  if (isinstance(value, list) and len(value) == 2
      and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
    return int(value[0]), int(value[1])
  return None


def _json_call(block: str) -> dict[str, Any] | None:
  try:
    call = json.loads(block.strip())
  except (ValueError, RecursionError):
    return None
  return call if isinstance(call, dict) else None


def parse(text: Any, *, fallback: bool = False) -> Parsed:
  """Reads a model answer; never raises.

  Args:
    text: the completion (anything that is not a string is a format failure).
    fallback: the evaluation's reading: when the block's JSON does not give a point, take
      the block's integers if there are exactly two.
  """
  if not isinstance(text, str):
    return Parsed(None, False)
  block = _first_block(text)
  if block is None:
    return Parsed(None, False)
  call = _json_call(block)
  args = call.get("arguments") if call is not None else None
  point = _int_pair(args.get("coordinate")) if isinstance(args, dict) else None
  well_formed = (point is not None and text.count(OPEN) == 1 and text.count(CLOSE) == 1
                 and call.get("name") == TOOL_NAME and "action" in args)
  if point is None and fallback:
    ints = _INT.findall(block)
    if len(ints) == 2:
      point = int(ints[0]), int(ints[1])
  return Parsed(point, well_formed)
