r"""A small offline stand-in for the Kaleidoscope release, to test the harness without network.

    python -m jaxlab.evals.kaleidoscope_fixture --out=tests/evals/data/kaleidoscope --nosaved

writes, for 18 languages x 20 items = 360 rows with all 18 fields of the release schema:

  parquet/train-00000-of-00001.parquet   the rows (the Hub's layout)
  images/data/<SRC>/images/<name>.png   the images, extracted (paths below ``images/`` equal
                                         the rows' ``image`` field and PNG options)
  data.zip                               the same images under ``final_data/``, as the release
  saved/                                 the rows as a ``datasets.save_to_disk`` folder (not
                                         committed: its metadata is not reproducible byte for
                                         byte; tests make it from the parquet)

The questions are our own short templates in each language (every script of the release:
Latin, Cyrillic, Arabic, Devanagari, Bengali, Telugu): additions and multiplications
(text-only) and "how many coloured squares are in the picture?" about a picture made of n x n
random colour squares, whose answer is n^2. Item ``j`` has the same numbers and answer letter
in every language, so parallel items really are parallel (``parallel_question_id``, empty for
every fifth item, as for some sources of the release). Per language: answers balanced (5 per
letter), 11 items with a question image (some with an ``<image>`` marker in the question),
and in two languages one item whose four options are PNG paths (a question without its own
image, as we guess the release's two such items are). Everything follows from ``seed``: a
rerun writes the same rows and the same pixels.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from typing import Any

import numpy as np

from jaxlab.evals import kaleidoscope

ITEMS_PER_LANGUAGE = 20
IMAGE_SIDE = 24
# Item positions (within a language) that carry a question image: 11 of 20.
IMAGE_ITEMS = (0, 2, 3, 5, 7, 8, 10, 12, 14, 16, 18)
# Of those, the ones whose question text holds its own ``<image>`` marker (after the text).
MARKED_ITEMS = (3, 12)
# (language, item position) of the two items whose options are PNG paths (text-only otherwise).
IMAGE_OPTION_ITEMS = (("en", 1), ("ru", 9))
GRID_SIZES = (2, 3, 4, 6)  # squares per side; the picture has n^2 squares

# (addition, multiplication, count the squares, which picture has most squares); our own wording.
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "en": ("How much is {a} + {b}?", "How much is {a} × {b}?",
           "How many coloured squares are in the picture?", "Which picture has the most squares?"),
    "es": ("¿Cuánto es {a} + {b}?", "¿Cuánto es {a} × {b}?",
           "¿Cuántos cuadrados de colores hay en la imagen?", "¿Qué imagen tiene más cuadrados?"),
    "fr": ("Combien font {a} + {b} ?", "Combien font {a} × {b} ?",
           "Combien de carrés colorés y a-t-il dans l'image ?",
           "Quelle image contient le plus de carrés ?"),
    "de": ("Wie viel ist {a} + {b}?", "Wie viel ist {a} × {b}?",
           "Wie viele farbige Quadrate sind auf dem Bild?",
           "Welches Bild hat die meisten Quadrate?"),
    "nl": ("Hoeveel is {a} + {b}?", "Hoeveel is {a} × {b}?",
           "Hoeveel gekleurde vierkanten staan er op de afbeelding?",
           "Welke afbeelding heeft de meeste vierkanten?"),
    "pt": ("Quanto é {a} + {b}?", "Quanto é {a} × {b}?",
           "Quantos quadrados coloridos há na imagem?", "Qual imagem tem mais quadrados?"),
    "hu": ("Mennyi {a} + {b}?", "Mennyi {a} × {b}?", "Hány színes négyzet van a képen?",
           "Melyik képen van a legtöbb négyzet?"),
    "hr": ("Koliko je {a} + {b}?", "Koliko je {a} × {b}?",
           "Koliko je obojenih kvadrata na slici?", "Na kojoj je slici najviše kvadrata?"),
    "sr": ("Колико је {a} + {b}?", "Колико је {a} × {b}?",
           "Колико обојених квадрата има на слици?", "На којој слици има највише квадрата?"),
    "lt": ("Kiek yra {a} + {b}?", "Kiek yra {a} × {b}?",
           "Kiek spalvotų kvadratų yra paveikslėlyje?",
           "Kuriame paveikslėlyje daugiausia kvadratų?"),
    "ru": ("Сколько будет {a} + {b}?", "Сколько будет {a} × {b}?",
           "Сколько цветных квадратов на картинке?",
           "На какой картинке больше всего квадратов?"),
    "uk": ("Скільки буде {a} + {b}?", "Скільки буде {a} × {b}?",
           "Скільки кольорових квадратів на малюнку?", "На якому малюнку найбільше квадратів?"),
    "ar": ("كم يساوي {a} + {b}؟", "كم يساوي {a} × {b}؟", "كم مربعًا ملونًا في الصورة؟",
           "أي صورة فيها أكبر عدد من المربعات؟"),
    "fa": ("{a} + {b} چند می‌شود؟", "{a} × {b} چند می‌شود؟", "در تصویر چند مربع رنگی وجود دارد؟",
           "کدام تصویر بیشترین تعداد مربع را دارد؟"),
    "hi": ("{a} + {b} कितना होता है?", "{a} × {b} कितना होता है?",
           "चित्र में कितने रंगीन वर्ग हैं?", "किस चित्र में सबसे अधिक वर्ग हैं?"),
    "ne": ("{a} + {b} कति हुन्छ?", "{a} × {b} कति हुन्छ?", "चित्रमा कतिवटा रङ्गीन वर्गहरू छन्?",
           "कुन चित्रमा सबैभन्दा धेरै वर्गहरू छन्?"),
    "bn": ("{a} + {b} কত?", "{a} × {b} কত?", "ছবিতে কয়টি রঙিন বর্গ আছে?",
           "কোন ছবিতে সবচেয়ে বেশি বর্গ আছে?"),
    "te": ("{a} + {b} ఎంత?", "{a} × {b} ఎంత?", "చిత్రంలో ఎన్ని రంగుల చతురస్రాలు ఉన్నాయి?",
           "ఏ చిత్రంలో ఎక్కువ చతురస్రాలు ఉన్నాయి?"),
}

COUNTRIES = {
    "ar": "Jordan", "bn": "Bangladesh", "de": "Germany", "en": "United States", "es": "Spain",
    "fa": "Iran", "fr": "France", "hi": "India", "hr": "Croatia", "hu": "Hungary",
    "lt": "Lithuania", "ne": "Nepal", "nl": "Netherlands", "pt": "Brazil", "ru": "Russia",
    "sr": "Serbia", "te": "India", "uk": "Ukraine",
}
TEXT_SUBJECTS = ("Mathematics", "Informatics", "Economics", "Reasoning", "General Knowledge",
                 "Physics", "Health", "History", "Geography")
IMAGE_SUBJECTS = ("Mathematics", "Design", "Physics", "Culture", "Driving License", "Medicine",
                  "Engineering", "Geography")
IMAGE_TYPES = ("diagram", "graph", "table", "photo")
IMAGE_INFORMATION = ("essential", "supplementary")
LEVELS = ("Secondary school", "University entrance", "University")


def _png(rng: np.random.Generator, n: int) -> bytes:
  """A IMAGE_SIDE^2 RGB picture of n x n squares of random colours, as PNG bytes."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  colours = rng.integers(0, 256, size=(n, n, 3), dtype=np.uint8)
  cell = -(-IMAGE_SIDE // n)
  pixels = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)[:IMAGE_SIDE, :IMAGE_SIDE]
  buf = io.BytesIO()
  Image.fromarray(pixels, "RGB").save(buf, format="PNG", optimize=True)
  return buf.getvalue()


def _place(values: list[str], correct: int, target: int) -> list[str]:
  """``values`` rotated so that ``values[correct]`` lands on position ``target``."""
  shift = (target - correct) % len(values)
  return [values[(k - shift) % len(values)] for k in range(len(values))]


def _numbers(rng: np.random.Generator, j: int) -> tuple[int, int, int, list[int]]:
  """(a, b, result, three distinct wrong results) of parallel item ``j``."""
  a, b = int(rng.integers(2, 13)), int(rng.integers(2, 13))
  result = a + b if j % 2 == 0 else a * b
  wrong: list[int] = []
  while len(wrong) < 3:
    w = result + int(rng.integers(-9, 10))
    if w > 0 and w != result and w not in wrong:
      wrong.append(w)
  return a, b, result, wrong


def build(seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
  """The fixture's rows and images (relative path -> PNG bytes)."""
  rng = np.random.default_rng(seed)
  shared = [_numbers(rng, j) for j in range(ITEMS_PER_LANGUAGE)]
  grids = [int(rng.integers(len(GRID_SIZES))) for _ in range(ITEMS_PER_LANGUAGE)]
  rows: list[dict[str, Any]] = []
  images: dict[str, bytes] = {}
  for lang in kaleidoscope.LANGUAGES:
    add, mul, count, pick = TEMPLATES[lang]
    src_text = f"KFIX_{lang.upper()}_2024"
    src_image = f"KFIX_{lang.upper()}_2024_Multimodal"
    for j in range(ITEMS_PER_LANGUAGE):
      target = j % 4
      row = {
          "language": lang, "country": COUNTRIES[lang], "license": "CC-BY-4.0",
          "level": LEVELS[j % len(LEVELS)], "original_question_num": str(j + 1),
          "parallel_question_id": "" if j % 5 == 4 else f"kfix-{j:02d}",
          "image_png": "", "image_information": "", "image_type": "", "image": None,
      }
      if (lang, j) in IMAGE_OPTION_ITEMS:
        question = pick
        names = [f"q{j + 1}_option_{'abcd'[k]}.png" for k in range(4)]
        sizes = _place(list(GRID_SIZES), len(GRID_SIZES) - 1, target)
        options = [f"data/{src_image}/images/{name}" for name in names]
        for path, n in zip(options, sizes):
          images[path] = _png(rng, n)
        subject, source = "Reasoning", src_image
      elif j in IMAGE_ITEMS:
        n = GRID_SIZES[grids[j]]
        question = count if j not in MARKED_ITEMS else f"{count}\n{kaleidoscope.IMAGE_TOKEN}"
        options = _place([str(s * s) for s in GRID_SIZES], grids[j], target)
        name = f"q{j + 1}.png"
        path = f"data/{src_image}/images/{name}"
        images[path] = _png(rng, n)
        row.update(image_png=name, image=path, image_type=IMAGE_TYPES[j % len(IMAGE_TYPES)],
                   image_information=IMAGE_INFORMATION[j % 2])
        subject, source = IMAGE_SUBJECTS[j % len(IMAGE_SUBJECTS)], src_image
      else:
        a, b, result, wrong = shared[j]
        question = (add if j % 2 == 0 else mul).format(a=a, b=b)
        options = _place([str(result)] + [str(w) for w in wrong], 0, target)
        subject, source = TEXT_SUBJECTS[j % len(TEXT_SUBJECTS)], src_text
      row.update(question=question, options=options, answer=target, source=source,
                 file_name=f"{source}.pdf", category_en=subject,
                 category_original_lang=subject,
                 general_category_en=kaleidoscope.domain(subject))
      rows.append({name: row[name] for name in kaleidoscope.FIELDS})
  return rows, images


def _write_bytes(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    f.write(data)
  os.replace(path + ".tmp", path)


def make(out_dir: str, seed: int = 0, *, saved: bool = True) -> dict[str, str]:
  """Writes the fixture (see the module docstring) under ``out_dir``; returns its paths."""
  import datasets  # pylint: disable=import-outside-toplevel
  rows, images = build(seed)
  paths = {"parquet": os.path.join(out_dir, "parquet"), "images": os.path.join(out_dir, "images"),
           "zip": os.path.join(out_dir, "data.zip")}
  ds = datasets.Dataset.from_list(rows, features=features())
  parquet = os.path.join(paths["parquet"], "train-00000-of-00001.parquet")
  os.makedirs(paths["parquet"], exist_ok=True)
  ds.to_parquet(parquet + ".tmp")
  os.replace(parquet + ".tmp", parquet)
  for rel, data in images.items():
    _write_bytes(os.path.join(paths["images"], rel), data)
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    for rel in sorted(images):
      info = zipfile.ZipInfo(kaleidoscope.ZIP_PREFIX + rel, date_time=(1980, 1, 1, 0, 0, 0))
      z.writestr(info, images[rel])
  _write_bytes(paths["zip"], buf.getvalue())
  if saved:
    paths["saved"] = os.path.join(out_dir, "saved")
    ds.save_to_disk(paths["saved"])
  return paths


def features():
  """The release's column types as ``datasets.Features`` (``image`` a nullable string)."""
  import datasets  # pylint: disable=import-outside-toplevel
  types = {name: datasets.Value("string") for name in kaleidoscope.FIELDS}
  types["options"] = datasets.List(datasets.Value("string"))
  types["answer"] = datasets.Value("int64")
  return datasets.Features(types)


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--saved", action=argparse.BooleanOptionalAction, default=True,
                      help="also write the save_to_disk folder (--nosaved / --no-saved: not)")
  parser.add_argument("--nosaved", dest="saved", action="store_false", help=argparse.SUPPRESS)
  a = parser.parse_args(argv)
  for name, path in make(a.out, a.seed, saved=a.saved).items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  main(sys.argv[1:])
