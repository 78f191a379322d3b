"""The synthetic 18-language exam: balanced, disjoint, in schema, and prompted as the harness does."""

import collections
import os

from jaxlab.evals import kaleidoscope, kaleidoscope_synthetic as synth
from jaxlab.llm import tasks
from jaxlab.models import tokenizer as tok_lib


def test_items_are_balanced_in_schema_and_answerable():
  rows, seen = synth.make_items(8, seed=0)
  assert len(rows) == 8 * 18 and len(seen) == len(rows)
  per_lang = collections.Counter(r["language"] for r in rows)
  assert set(per_lang) == set(kaleidoscope.LANGUAGES) and set(per_lang.values()) == {8}
  for lang in kaleidoscope.LANGUAGES:
    answers = collections.Counter(r["answer"] for r in rows if r["language"] == lang)
    assert answers == {0: 2, 1: 2, 2: 2, 3: 2}
  for i, r in enumerate(rows):
    item = kaleidoscope.item_from_row(r, i)  # raises on any schema violation
    numbers = [k for k, o in enumerate(item.options) if o.isdigit()]
    assert numbers == [item.answer] and not item.is_multimodal


def test_heldout_is_disjoint_and_written_in_the_release_format(tmp_path):
  paths = synth.write(str(tmp_path), train_per_language=4, heldout_per_language=2, seed=3)
  train, seen = synth.make_items(4, seed=3)
  held = kaleidoscope.load(paths["heldout"]).items
  assert len(held) == 36
  assert not {(it.language, it.options) for it in held} & seen
  sft = tasks.load_jsonl(paths["train"])
  assert len(sft) == 2 * len(train)  # each item once per regime
  assert os.path.isfile(paths["eval"])


def test_sft_prompts_are_the_harness_prompts_and_answers_verify():
  rows, _ = synth.make_items(1, seed=0)
  sft = synth.sft_rows(rows, seed=0)
  tok = tok_lib.train_char_tokenizer(["0"], None)
  for k, row in enumerate(sft):
    item = kaleidoscope.item_from_row(rows[k // 2], k // 2)
    regime = row["metadata"]["regime"]
    assert row["question"] == kaleidoscope.render(kaleidoscope.build_prompt(item, regime), tok)
    letter, wrong = "ABCD"[item.answer], "ABCD"[(item.answer + 1) % 4]
    form = '{{"choice": "{}"}}' if regime == "direct" else "<ANSWER> {} </ANSWER>"
    assert row["answer"] == form.format(letter)
    assert tasks.verify("multiple_choice", form.format(letter), row["answer"])
    assert not tasks.verify("multiple_choice", form.format(wrong), row["answer"])
