r"""A synthetic multiple-choice exam in the 18 Kaleidoscope languages, to train a tiny model on.

The real benchmark needs a multilingual (vision-)language model of billions of parameters;
this task lets a model trained here from scratch in minutes exercise the whole harness
(prompts in both regimes, extraction, per-language metrics) with a score that can only be
above chance if the model reads the question and the options.

Each item asks, in its language, which of four options is a number: one option is a
two-digit number, the other three are words of that language (taken from our own
translations of two arithmetic questions below, so every script appears). The answer position
is balanced over A-D. A first version asked which of four numbers is the largest or the
smallest; a 3-layer model did not learn it within this CPU budget (held-out accuracy 0.25
after 400 steps of 16, see docs/reproductions/kaleidoscope.md), so the exam now asks for a
property that one attention head can find, which is all the harness check needs.

    python -m jaxlab.evals.kaleidoscope_synthetic --out=data/kaleidoscope_synthetic \
        --train_per_language=300 --heldout_per_language=20 --seed=0

writes

  train.jsonl     SFT rows (``jaxlab.llm.tasks`` format, task ``multiple_choice``): the
                  question is the full chat prompt of the harness (both regimes, each item
                  once per regime), the answer its letter; train with
                  ``configs/kaleidoscope/tiny_mcq.py``.
  eval.jsonl      held-out SFT rows for the trainer's own evaluation.
  heldout/        the held-out items as a Kaleidoscope-schema parquet folder, for
                  ``python -m launch.eval --benchmark=kaleidoscope --data=.../heldout``.

Held-out items never share (language, options) with a training item.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from jaxlab.core import files

# The question of the exam, per language; our own wording.
QUESTION: dict[str, str] = {
    "en": "Which of these options is a number?",
    "es": "¿Cuál de estas opciones es un número?",
    "fr": "Laquelle de ces options est un nombre ?",
    "de": "Welche dieser Optionen ist eine Zahl?",
    "nl": "Welke van deze opties is een getal?",
    "pt": "Qual destas opções é um número?",
    "hu": "Melyik lehetőség egy szám?",
    "hr": "Koja je od ovih opcija broj?",
    "sr": "Која од ових опција је број?",
    "lt": "Kuris iš šių variantų yra skaičius?",
    "ru": "Какой из этих вариантов является числом?",
    "uk": "Який з цих варіантів є числом?",
    "ar": "أي من هذه الخيارات هو عدد؟",
    "fa": "کدام یک از این گزینه‌ها یک عدد است؟",
    "hi": "इनमें से कौन सा विकल्प एक संख्या है?",
    "ne": "यी मध्ये कुन विकल्प एउटा संख्या हो?",
    "bn": "এই বিকল্পগুলির মধ্যে কোনটি একটি সংখ্যা?",
    "te": "ఈ ఎంపికలలో ఏది ఒక సంఖ్య?",
}

# Two arithmetic questions per language (our own wording); their words are the distractors.
QUESTIONS: dict[str, tuple[str, str]] = {
    "en": ("Which of these numbers is the largest?", "Which of these numbers is the smallest?"),
    "es": ("¿Cuál de estos números es el mayor?", "¿Cuál de estos números es el menor?"),
    "fr": ("Lequel de ces nombres est le plus grand ?", "Lequel de ces nombres est le plus petit ?"),
    "de": ("Welche dieser Zahlen ist die größte?", "Welche dieser Zahlen ist die kleinste?"),
    "nl": ("Welk van deze getallen is het grootst?", "Welk van deze getallen is het kleinst?"),
    "pt": ("Qual destes números é o maior?", "Qual destes números é o menor?"),
    "hu": ("Melyik szám a legnagyobb ezek közül?", "Melyik szám a legkisebb ezek közül?"),
    "hr": ("Koji je od ovih brojeva najveći?", "Koji je od ovih brojeva najmanji?"),
    "sr": ("Који је од ових бројева највећи?", "Који је од ових бројева најмањи?"),
    "lt": ("Kuris iš šių skaičių yra didžiausias?", "Kuris iš šių skaičių yra mažiausias?"),
    "ru": ("Какое из этих чисел самое большое?", "Какое из этих чисел самое маленькое?"),
    "uk": ("Яке з цих чисел найбільше?", "Яке з цих чисел найменше?"),
    "ar": ("أي من هذه الأعداد هو الأكبر؟", "أي من هذه الأعداد هو الأصغر؟"),
    "fa": ("کدام یک از این اعداد بزرگ‌ترین است؟", "کدام یک از این اعداد کوچک‌ترین است؟"),
    "hi": ("इनमें से कौन सी संख्या सबसे बड़ी है?", "इनमें से कौन सी संख्या सबसे छोटी है?"),
    "ne": ("यी मध्ये कुन संख्या सबैभन्दा ठूलो हो?", "यी मध्ये कुन संख्या सबैभन्दा सानो हो?"),
    "bn": ("এই সংখ্যাগুলির মধ্যে কোনটি সবচেয়ে বড়?", "এই সংখ্যাগুলির মধ্যে কোনটি সবচেয়ে ছোট?"),
    "te": ("ఈ సంఖ్యలలో ఏది అతి పెద్దది?", "ఈ సంఖ్యలలో ఏది అతి చిన్నది?"),
}

SOURCE = "jaxlab synthetic numbers exam"
TASK = "multiple_choice"


def _words(lang: str) -> list[str]:
  """The distinct words (3+ characters, punctuation stripped) of a language's questions."""
  out = []
  for text in QUESTIONS[lang]:
    for w in text.split():
      w = w.strip("¿?؟,.:")
      if len(w) >= 3 and w not in out:
        out.append(w)
  return out


def make_items(per_language: int, seed: int, exclude: set | None = None,
               start_index: int = 0) -> tuple[list[dict[str, Any]], set]:
  """Kaleidoscope-schema rows (``per_language`` per language) and their identity set.

  The number lands on position ``i % 4`` for the ``i``-th item of a language (balanced
  answers); the three words are drawn without replacement from the language's words.
  """
  rng = np.random.default_rng(seed)
  exclude = exclude or set()
  rows, seen = [], set()
  for lang in QUESTIONS:
    words = _words(lang)
    made = 0
    while made < per_language:
      target = made % 4
      picked = [words[j] for j in rng.choice(len(words), size=3, replace=False)]
      options = picked[:target] + [str(int(rng.integers(10, 100)))] + picked[target:]
      ident = (lang, tuple(options))
      if ident in exclude or ident in seen:
        continue
      seen.add(ident)
      n = start_index + len(rows)
      rows.append({
          "language": lang, "country": "", "file_name": f"synthetic_{lang}.txt",
          "source": SOURCE, "license": "CC0-1.0", "level": "synthetic",
          "category_en": "General Knowledge", "category_original_lang": "General Knowledge",
          "original_question_num": str(n), "question": QUESTION[lang],
          "options": options, "answer": target, "image_png": "",
          "image_information": "", "image_type": "", "parallel_question_id": str(n),
          "image": None,
          "general_category_en": "Practical Skills & General Knowledge"})
      made += 1
  return rows, seen


def sft_rows(items: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
  """One SFT row per item and regime: the harness's rendered prompt and the answer letter.

  Prompts are rendered with the chat template of the char tokenizers that from-scratch runs
  build (:data:`jaxlab.models.tokenizer.CHAR_CHAT_TEMPLATE`), so training sees exactly what
  the harness will send.
  """
  from jaxlab.evals import kaleidoscope  # pylint: disable=import-outside-toplevel
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  renderer = tok_lib.train_char_tokenizer(["0"], None)
  out = []
  for i, row in enumerate(items):
    item = kaleidoscope.item_from_row(row, i)
    for regime in ("direct", "cot"):
      prompt = kaleidoscope.render(kaleidoscope.build_prompt(item, regime), renderer)
      letter = "ABCD"[row["answer"]]
      completion = (f'{{"choice": "{letter}"}}' if regime == "direct"
                    else f"<ANSWER> {letter} </ANSWER>")
      out.append({"task": TASK, "question": prompt, "answer": completion, "seed": seed,
                  "metadata": {"language": row["language"], "regime": regime}})
  return out


def write(out: str, train_per_language: int = 300, heldout_per_language: int = 20,
          seed: int = 0) -> dict[str, str]:
  """Writes the three outputs of the module docstring; returns their paths."""
  import datasets  # pylint: disable=import-outside-toplevel
  train, seen = make_items(train_per_language, seed)
  heldout, _ = make_items(heldout_per_language, seed + 1, exclude=seen)
  paths = {"train": os.path.join(out, "train.jsonl"), "eval": os.path.join(out, "eval.jsonl"),
           "heldout": os.path.join(out, "heldout")}
  files.write_jsonl(paths["train"], sft_rows(train, seed), ensure_ascii=False)
  files.write_jsonl(paths["eval"], sft_rows(heldout, seed + 1), ensure_ascii=False)
  parquet = os.path.join(paths["heldout"], "train-00000-of-00001.parquet")
  os.makedirs(paths["heldout"], exist_ok=True)
  datasets.Dataset.from_list(heldout).to_parquet(parquet + ".tmp")
  os.replace(parquet + ".tmp", parquet)
  return paths


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--train_per_language", type=int, default=300)
  parser.add_argument("--heldout_per_language", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  a = parser.parse_args(argv)
  for name, path in write(a.out, a.train_per_language, a.heldout_per_language, a.seed).items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  main(sys.argv[1:])
