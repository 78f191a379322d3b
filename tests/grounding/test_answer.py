"""The answer format: one tool call with an integer point; the parser never raises."""

import pytest

from jaxlab.grounding import answer


def _call(coord, name="computer_use", action="left_click"):
  import json  # pylint: disable=import-outside-toplevel
  args = {"coordinate": coord} if action is None else {"action": action, "coordinate": coord}
  return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def test_round_trip_of_the_target_text():
  text = answer.format_answer(123, 45)
  assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
  assert answer.parse(text) == answer.Parsed((123, 45), True)
  assert answer.parse("Sure. " + text + " done") == answer.Parsed((123, 45), True)


@pytest.mark.parametrize("text,point,well_formed", [
    (_call([1, 2], name="other"), (1, 2), False),  # wrong tool: point kept, format flag off
    (_call([1, 2], action=None), (1, 2), False),  # no action
    (_call([1, 2]) + _call([3, 4]), (1, 2), False),  # two calls: the first one is read
    (_call([1.0, 2.0]), None, False),  # floats
    (_call([1, 2, 3]), None, False),  # three coordinates
    (_call([True, 2]), None, False),  # booleans are not integers
    (_call("1, 2"), None, False),
    ('{"name": "computer_use", "arguments": {"coordinate": [1, 2]}}', None, False),  # no tags
    ("<tool_call> {not json [5, 6] </tool_call>", None, False),  # bad JSON, no fallback
    ("<tool_call>[1, 2]</tool_call>", None, False),  # JSON but not an object
    ("", None, False),
])
def test_reward_reading(text, point, well_formed):
  assert answer.parse(text) == answer.Parsed(point, well_formed)


def test_unclosed_block_is_read_to_the_end():
  text = _call([7, 8]).replace("</tool_call>", "")
  assert answer.parse(text).point == (7, 8)
  assert not answer.parse(text).well_formed


def test_fallback_takes_exactly_two_integers_of_the_block():
  assert answer.parse("<tool_call> {not json [5, 6] </tool_call>", fallback=True).point == (5, 6)
  assert answer.parse("<tool_call>click -3 -4</tool_call>", fallback=True).point == (-3, -4)
  assert answer.parse("<tool_call>1 2 3</tool_call>", fallback=True).point is None
  assert answer.parse("no block 5 6", fallback=True).point is None
  # The fallback does not override a well-formed JSON point, nor mark anything well formed.
  assert answer.parse(_call([1, 2]), fallback=True) == answer.Parsed((1, 2), True)
  assert not answer.parse("<tool_call>5 6</tool_call>", fallback=True).well_formed


@pytest.mark.parametrize("value", [None, 12, b"<tool_call>", ["<tool_call>"], {"a": 1}])
def test_non_strings_are_format_failures(value):
  assert answer.parse(value) == answer.Parsed(None, False)
  assert answer.parse(value, fallback=True) == answer.Parsed(None, False)


def test_never_raises_on_hostile_text():
  deep = "<tool_call>" + "[" * 100_000 + "</tool_call>"
  assert answer.parse(deep).point is None
  assert answer.parse("<tool_call>\x00\ud800</tool_call>").point is None
