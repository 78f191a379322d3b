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

With ``--image_per_language=N`` (N > 0) it also writes an image exam for a vision-language
model: "what colour is the shape in the image?" asked in each language, the image one filled
square or circle on grey (:func:`jaxlab.llm.image_tasks.draw`), red, green, blue or yellow,
saved at the harness's 512x512 so that training and scoring read the same pixels; the options
are those four colour words of the item's language (our own translations) in that order, so
the answer depends on the image only and its position is balanced. (A first version shuffled
four of six colour words per item; a tiny model trained from scratch learned the format but
answered A on every item, and that run could not tell a model blind to the image from one
that had not yet learned 108 colour words in 18 scripts: see docs/reproductions/
kaleidoscope.md. Reading the options is what the text exam checks.)

  images/               the PNG files of both splits
  train_images.jsonl    SFT rows for ``configs/kaleidoscope/tiny_vlm_mcq.py``: the harness's
                        prompt with the qwen_vl image span, the answer, and the image path
  eval_images.jsonl     held-out SFT rows for the trainer's own evaluation
  heldout_images/       the held-out image items as a Kaleidoscope-schema parquet folder
                        (``--images=<out>`` resolves their ``images/...`` paths)
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

# The image exam's question and its six colour words (in jaxlab.llm.image_tasks.COLOURS
# order: red, green, blue, yellow, purple, orange), per language; our own wording.
COLOUR_QUESTION: dict[str, str] = {
    "en": "What colour is the shape in the image?",
    "es": "¿De qué color es la figura de la imagen?",
    "fr": "De quelle couleur est la forme sur l'image ?",
    "de": "Welche Farbe hat die Form im Bild?",
    "nl": "Welke kleur heeft de vorm op de afbeelding?",
    "pt": "De que cor é a forma na imagem?",
    "hu": "Milyen színű az alakzat a képen?",
    "hr": "Koje je boje oblik na slici?",
    "sr": "Које је боје облик на слици?",
    "lt": "Kokios spalvos yra figūra paveikslėlyje?",
    "ru": "Какого цвета фигура на изображении?",
    "uk": "Якого кольору фігура на зображенні?",
    "ar": "ما لون الشكل في الصورة؟",
    "fa": "شکل در تصویر چه رنگی است؟",
    "hi": "चित्र में आकृति किस रंग की है?",
    "ne": "चित्रमा रहेको आकृति कुन रङको छ?",
    "bn": "ছবির আকৃতিটি কোন রঙের?",
    "te": "చిత్రంలోని ఆకారం ఏ రంగులో ఉంది?",
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("red", "green", "blue", "yellow", "purple", "orange"),
    "es": ("rojo", "verde", "azul", "amarillo", "morado", "naranja"),
    "fr": ("rouge", "vert", "bleu", "jaune", "violet", "orange"),
    "de": ("rot", "grün", "blau", "gelb", "lila", "orange"),
    "nl": ("rood", "groen", "blauw", "geel", "paars", "oranje"),
    "pt": ("vermelho", "verde", "azul", "amarelo", "roxo", "laranja"),
    "hu": ("piros", "zöld", "kék", "sárga", "lila", "narancssárga"),
    "hr": ("crvena", "zelena", "plava", "žuta", "ljubičasta", "narančasta"),
    "sr": ("црвена", "зелена", "плава", "жута", "љубичаста", "наранџаста"),
    "lt": ("raudona", "žalia", "mėlyna", "geltona", "violetinė", "oranžinė"),
    "ru": ("красный", "зелёный", "синий", "жёлтый", "фиолетовый", "оранжевый"),
    "uk": ("червоний", "зелений", "синій", "жовтий", "фіолетовий", "помаранчевий"),
    "ar": ("أحمر", "أخضر", "أزرق", "أصفر", "بنفسجي", "برتقالي"),
    "fa": ("قرمز", "سبز", "آبی", "زرد", "بنفش", "نارنجی"),
    "hi": ("लाल", "हरा", "नीला", "पीला", "बैंगनी", "नारंगी"),
    "ne": ("रातो", "हरियो", "निलो", "पहेंलो", "बैजनी", "सुन्तला"),
    "bn": ("লাল", "সবুজ", "নীল", "হলুদ", "বেগুনি", "কমলা"),
    "te": ("ఎరుపు", "ఆకుపచ్చ", "నీలం", "పసుపు", "ఊదా", "నారింజ"),
}
IMAGE_SIZE = (512, 512)  # the harness's default resize: training reads what scoring reads
IMAGE_DIR = "images"
IMAGE_OPTIONS = 4  # the image exam asks about the first four colours

SOURCE = "jaxlab synthetic numbers exam"
IMAGE_SOURCE = "jaxlab synthetic colours exam"
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
      rows.append(_row(lang, start_index + len(rows), QUESTION[lang], options, target))
      made += 1
  return rows, seen


def _row(lang: str, n: int, question: str, options: list[str], answer: int,
         image: str | None = None, source: str = SOURCE) -> dict[str, Any]:
  """One Kaleidoscope-schema row (every field of the release; ``image`` a relative path)."""
  return {
      "language": lang, "country": "", "file_name": f"synthetic_{lang}.txt",
      "source": source, "license": "CC0-1.0", "level": "synthetic",
      "category_en": "General Knowledge", "category_original_lang": "General Knowledge",
      "original_question_num": str(n), "question": question,
      "options": options, "answer": answer, "image_png": "",
      "image_information": "", "image_type": "synthetic shape" if image else "",
      "parallel_question_id": str(n), "image": image,
      "general_category_en": "Practical Skills & General Knowledge"}


def make_image_items(per_language: int, seed: int, out: str, split: str
                     ) -> list[dict[str, Any]]:
  """Image items of ``split`` (``per_language`` per language), their PNGs written under
  ``out/images`` and named in the rows relative to ``out``.

  The options are the language's first four colour words (red, green, blue, yellow) in that
  order for every item, so the answer is a function of the image alone: the ``i``-th item of
  a language shows colour ``i % 4`` (balanced answers; the shape, its place and the grey are
  drawn until a shape of that colour comes). The two splits draw from different streams.
  """
  from jaxlab.llm import image_tasks  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.join(out, IMAGE_DIR), exist_ok=True)
  rng = np.random.default_rng([seed, {"train": 0, "heldout": 1}[split]])
  colours = list(image_tasks.COLOURS)[:IMAGE_OPTIONS]
  rows = []
  for lang in COLOUR_QUESTION:
    options = list(COLOUR_WORDS[lang][:IMAGE_OPTIONS])
    for i in range(per_language):
      target = i % IMAGE_OPTIONS
      image, facts = image_tasks.draw(rng)
      while facts["colour"] != colours[target]:
        image, facts = image_tasks.draw(rng)
      image = image.resize(IMAGE_SIZE)  # PIL's default filter, as the harness resizes
      name = f"{IMAGE_DIR}/{split}_{lang}_{i:04d}.png"
      image.save(os.path.join(out, name), optimize=True)
      rows.append(_row(lang, len(rows), COLOUR_QUESTION[lang], options, target, image=name,
                       source=IMAGE_SOURCE))
  return rows


def sft_rows(items: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
  """One SFT row per item and regime: the harness's rendered prompt and the answer letter.

  Prompts are rendered with the chat template of the char tokenizers that from-scratch runs
  build (:data:`jaxlab.models.tokenizer.CHAR_CHAT_TEMPLATE`), so training sees exactly what
  the harness will send.

  An image item's prompt holds the qwen_vl family's image span where the harness puts it,
  and its row names the image file (field ``image``, relative to the output folder). It is
  rendered without a chat template (the harness's plain system / user join), as the harness
  renders it for a ``qwen_vl`` model trained from scratch here, whose char tokenizer has none
  (``jaxlab.llm.sft`` leaves it out so that launch.generate renders prompts as training did).
  """
  from jaxlab.evals import kaleidoscope  # pylint: disable=import-outside-toplevel
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  renderer = tok_lib.train_char_tokenizer(["0"], None)
  marker = kaleidoscope.image_marker(kaleidoscope.VLM_FAMILY)
  out = []
  for i, row in enumerate(items):
    item = kaleidoscope.item_from_row(row, i)
    for regime in ("direct", "cot"):
      prompt = kaleidoscope.build_prompt(item, regime)
      prompt = (kaleidoscope.render(prompt, None, marker) if item.image
                else kaleidoscope.render(prompt, renderer))
      letter = "ABCD"[row["answer"]]
      completion = (f'{{"choice": "{letter}"}}' if regime == "direct"
                    else f"<ANSWER> {letter} </ANSWER>")
      extra = {"image": item.image} if item.image else {}
      out.append({"task": TASK, "question": prompt, "answer": completion, "seed": seed,
                  "metadata": {"language": row["language"], "regime": regime}, **extra})
  return out


def _write_parquet(folder: str, rows: list[dict[str, Any]]) -> None:
  import datasets  # pylint: disable=import-outside-toplevel
  parquet = os.path.join(folder, "train-00000-of-00001.parquet")
  os.makedirs(folder, exist_ok=True)
  datasets.Dataset.from_list(rows).to_parquet(parquet + ".tmp")
  os.replace(parquet + ".tmp", parquet)


def write(out: str, train_per_language: int = 300, heldout_per_language: int = 20,
          seed: int = 0, image_per_language: int = 0,
          image_heldout_per_language: int = 20) -> dict[str, str]:
  """Writes the outputs of the module docstring (the image exam when ``image_per_language``
  > 0); returns their paths."""
  train, seen = make_items(train_per_language, seed)
  heldout, _ = make_items(heldout_per_language, seed + 1, exclude=seen)
  paths = {"train": os.path.join(out, "train.jsonl"), "eval": os.path.join(out, "eval.jsonl"),
           "heldout": os.path.join(out, "heldout")}
  files.write_jsonl(paths["train"], sft_rows(train, seed), ensure_ascii=False)
  files.write_jsonl(paths["eval"], sft_rows(heldout, seed + 1), ensure_ascii=False)
  _write_parquet(paths["heldout"], heldout)
  if image_per_language > 0:
    train = make_image_items(image_per_language, seed, out, "train")
    heldout = make_image_items(image_heldout_per_language, seed, out, "heldout")
    paths.update(train_images=os.path.join(out, "train_images.jsonl"),
                 eval_images=os.path.join(out, "eval_images.jsonl"),
                 heldout_images=os.path.join(out, "heldout_images"))
    files.write_jsonl(paths["train_images"], sft_rows(train, seed), ensure_ascii=False)
    files.write_jsonl(paths["eval_images"], sft_rows(heldout, seed + 1), ensure_ascii=False)
    _write_parquet(paths["heldout_images"], heldout)
  return paths


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--train_per_language", type=int, default=300)
  parser.add_argument("--heldout_per_language", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--image_per_language", type=int, default=0,
                      help="training items per language of the image exam (0: none)")
  parser.add_argument("--image_heldout_per_language", type=int, default=20)
  a = parser.parse_args(argv)
  for name, path in write(a.out, a.train_per_language, a.heldout_per_language, a.seed,
                          a.image_per_language, a.image_heldout_per_language).items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  main(sys.argv[1:])
