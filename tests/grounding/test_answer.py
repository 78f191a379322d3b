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


@pytest.mark.parametrize("text,point,well_formed,error", [
    (_call([1, 2], name="other"), (1, 2), False, False),  # wrong tool: point kept, flag off
    (_call([1, 2], action=None), (1, 2), False, False),  # no action
    (_call([1, 2]) + _call([3, 4]), (1, 2), False, False),  # two calls: the first one is read
    (_call([1.0, 2.0]), None, False, False),  # floats
    (_call([1, 2, 3]), None, False, False),  # three coordinates
    (_call([True, 2]), None, False, False),  # booleans are not integers
    (_call("1, 2"), None, False, False),
    ('{"name": "computer_use", "arguments": {"coordinate": [1, 2]}}', None, False, False),
    ("<tool_call> {not json [5, 6] </tool_call>", None, False, False),  # bad JSON, no fallback
    ('<tool_call>{"name": "computer_use"}</tool_call>', None, False, False),  # no arguments
    # The paper's reward raises on these (and scores -1): JSON that is not an object, or
    # whose arguments are not an object.
    ("<tool_call>[1, 2]</tool_call>", None, False, True),
    ("<tool_call>null</tool_call>", None, False, True),
    ('<tool_call>{"arguments": [1, 2]}</tool_call>', None, False, True),
    ('<tool_call>{"arguments": null}</tool_call>', None, False, True),
    ("", None, False, False),
])
def test_reward_reading(text, point, well_formed, error):
  assert answer.parse(text) == answer.Parsed(point, well_formed, error)


def test_reward_reading_needs_the_closing_tag():
  """A completion cut off before ``</tool_call>`` (e.g. at the token limit) has no point for
  the reward, as the paper's reward reads ``<tool_call>(.*?)</tool_call>``; the evaluation
  reads the unclosed block to the end, as the paper's evaluator does."""
  text = _call([7, 8]).replace("</tool_call>", "")
  assert answer.parse(text) == answer.Parsed(None, False)
  assert answer.parse(text, fallback=True) == answer.Parsed((7, 8), False)
  # Only the first block counts: a later closed block does not rescue an unclosed first one
  # whose text runs into it.
  broken = "<tool_call> {" + _call([1, 2])
  assert answer.parse(broken).point is None


def test_evaluation_reading_truncates_numbers_like_int():
  assert answer.parse(_call([150.7, 70.2]), fallback=True).point == (150, 70)
  assert answer.parse(_call([-0.5, 3.9]), fallback=True).point == (0, 3)
  assert answer.parse(_call([-1, -1]), fallback=True).point == (-1, -1)
  for bad in ([1, 2, 3], [1], "1, 2", [None, 2], [float("inf"), 1], [True, 2]):
    assert answer.parse(_call(bad), fallback=True).point is None, bad
  # JSON of another shape is a miss: the integer fallback is for text that is not JSON.
  for block in ("[150, 70]", '{"x": 150, "y": 70}', '{"arguments": {"x": 1, "y": 2}}'):
    assert answer.parse(f"<tool_call>{block}</tool_call>", fallback=True).point is None, block


def test_fallback_takes_exactly_two_unsigned_integers_of_a_block_that_is_not_json():
  assert answer.parse("<tool_call> {not json [5, 6] </tool_call>", fallback=True).point == (5, 6)
  # The reference evaluator's pattern has no sign: -3 reads as 3.
  assert answer.parse("<tool_call>click -3 -4</tool_call>", fallback=True).point == (3, 4)
  assert answer.parse("<tool_call>1 2 3</tool_call>", fallback=True).point is None
  assert answer.parse("<tool_call>click 1.5 2</tool_call>", fallback=True).point is None
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
  # JSON nested too deep to decode: the paper's reward raises there (-1), its evaluator misses.
  nested = "<tool_call>" + "[" * 100_000 + "]" * 100_000 + "</tool_call>"
  assert answer.parse(nested) == answer.Parsed(None, False, error=True)
  assert answer.parse(nested, fallback=True) == answer.Parsed(None, False)
