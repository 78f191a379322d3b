r"""A procedurally generated image task for vision-language models: one coloured shape.

Each image (height and width drawn from 56..112 pixels, so a batch mixes patch grids) shows one
filled square or circle of one of six colours on a grey background, wholly inside one quadrant.
Each row asks one of two questions about it:

  "what colour is the shape?"  ->  red | green | blue | yellow | purple | orange   (chance 1/6)
  "where is the shape?"        ->  top-left | top-right | bottom-left | bottom-right  (1/4)

so a model that ignores the image scores at most ~21% (half the rows of each kind). The files
are task rows (:mod:`jaxlab.llm.tasks`, task ``"shapes"``, verified by an exact match of the
first word) with the image path, relative to the JSONL file, in field ``image``:

    python -m jaxlab.llm.image_tasks --out=data/vlm --train=1200 --eval=200 --seed=0

writes ``data/vlm/shapes_{train,eval}.jsonl`` and ``data/vlm/shapes/{train,eval}_NNNNN.png``
(deterministic in the seed; the held-out images are drawn from another stream than the
training ones). The ``"shapes"`` verifier is listed in :data:`jaxlab.llm.tasks.TASKS`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import numpy as np

from jaxlab.llm import tasks as tasks_lib

TASK = "shapes"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 230),
           "yellow": (235, 215, 40), "purple": (150, 60, 190), "orange": (245, 140, 30)}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUESTIONS = {"colour": "what colour is the shape?", "where": "where is the shape?"}
MIN_SIDE, MAX_SIDE = 56, 112


def draw(rng: np.random.Generator):
  """One image and its facts: ``(PIL image, {"colour", "quadrant", "kind"})``."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  h, w = (int(x) for x in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
  grey = int(rng.integers(60, 200))
  image = Image.new("RGB", (w, h), (grey, grey, grey))
  colour = str(rng.choice(list(COLOURS)))
  quadrant = int(rng.integers(4))
  kind = str(rng.choice(["square", "circle"]))
  side = int(rng.integers(int(0.22 * min(h, w)), int(0.4 * min(h, w)) + 1))
  # Inside the quadrant with a 2-pixel margin from its edges.
  x0 = (quadrant % 2) * (w // 2) + int(rng.integers(2, max(3, w // 2 - side - 1)))
  y0 = (quadrant // 2) * (h // 2) + int(rng.integers(2, max(3, h // 2 - side - 1)))
  box = (x0, y0, x0 + side - 1, y0 + side - 1)
  pen = ImageDraw.Draw(image)
  (pen.rectangle if kind == "square" else pen.ellipse)(box, fill=COLOURS[colour])
  return image, {"colour": colour, "quadrant": QUADRANTS[quadrant], "kind": kind}


def make_rows(n: int, seed: int, split: str, image_dir: str, rel_dir: str
              ) -> list[dict[str, Any]]:
  """``n`` rows of ``split``, their images written to ``image_dir`` (named in the rows as
  ``rel_dir/<split>_NNNNN.png``)."""
  os.makedirs(image_dir, exist_ok=True)
  rng = np.random.default_rng([seed, {"train": 0, "eval": 1}.get(split, 2)])
  rows = []
  for i in range(n):
    image, facts = draw(rng)
    ask = "colour" if i % 2 == 0 else "where"
    name = f"{split}_{i:05d}.png"
    image.save(os.path.join(image_dir, name), optimize=True)
    rows.append({"task": TASK, "question": QUESTIONS[ask],
                 "answer": facts["colour"] if ask == "colour" else facts["quadrant"],
                 "seed": seed, "image": f"{rel_dir}/{name}",
                 "metadata": {"ask": ask, "size": [image.height, image.width], **facts}})
  return rows


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="data/vlm", help="output folder")
  parser.add_argument("--train", type=int, default=1200, help="training rows")
  parser.add_argument("--eval", type=int, default=200, help="held-out rows")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  for split, n in (("train", args.train), ("eval", args.eval)):
    rows = make_rows(n, args.seed, split, os.path.join(args.out, "shapes"), "shapes")
    path = os.path.join(args.out, f"shapes_{split}.jsonl")
    tasks_lib.write_jsonl(rows, path)
    print(f"{path}: {n} rows")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
