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


def test_image_exam_items_images_and_prompts(tmp_path):
  """The image exam: balanced answers, the right colour word (of the item's language) at the
  answer, the same option order in every item, PNGs at the harness's 512x512 that the harness
  opens, training prompts equal to the harness's qwen_vl prompts for a tokenizer without a
  chat template, disjoint image streams."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import image_tasks  # pylint: disable=import-outside-toplevel
  paths = synth.write(str(tmp_path), train_per_language=1, heldout_per_language=1, seed=0,
                      image_per_language=4, image_heldout_per_language=2)
  assert len(tasks.load_jsonl(paths["train_images"])) == 2 * 4 * 18  # both regimes
  ds = kaleidoscope.load(paths["heldout_images"], images=str(tmp_path))
  assert len(ds) == 2 * 18 and all(it.is_multimodal for it in ds.items)
  colours = list(image_tasks.COLOURS)
  for it in ds.items:
    image = ds.open_image(it)
    assert image.size == synth.IMAGE_SIZE
    # The shape's colour is the right option's word in the item's language.
    rgb = {tuple(c) for _, c in image.getcolors(512 * 512)}
    right = colours[synth.COLOUR_WORDS[it.language].index(it.options[it.answer])]
    assert image_tasks.COLOURS[right] in rgb
    # One option order in every item: the image decides the answer.
    assert tuple(it.options) == synth.COLOUR_WORDS[it.language][:4]
  sft = tasks.load_jsonl(paths["eval_images"])
  for k, row in enumerate(sft):
    item = ds.items[k // 2]
    prompt = kaleidoscope.build_prompt(item, row["metadata"]["regime"])
    assert row["question"] == kaleidoscope.render(prompt, None, kaleidoscope.image_marker(
        kaleidoscope.VLM_FAMILY))
    assert row["image"] == item.image
  per_language = collections.Counter((it.language, it.answer) for it in ds.items)
  assert set(per_language.values()) == {1}  # answers 0 and 1 of 2 items in every language
  held_pixels = Image.open(tmp_path / ds.items[0].image).tobytes()
  assert all(Image.open(tmp_path / f"images/train_{ds.items[0].language}_{i:04d}.png").tobytes()
             != held_pixels for i in range(4))
