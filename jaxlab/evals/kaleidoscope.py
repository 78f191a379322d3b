"""Kaleidoscope (Salazar et al., 2025): the release's items, checked, and the model prompts.

The benchmark is a multilingual, partly multimodal multiple-choice exam in 18 languages
(``CohereLabs/kaleidoscope``: one parquet split of 18-field rows, images in a separate
``data.zip`` under ``final_data/``). This module is the data side of the harness:

  * :func:`load` reads the release from local files only (a parquet file, a folder of parquet
    files such as the Hub's ``data/train-*.parquet``, or a ``datasets.save_to_disk`` folder)
    with the ``datasets`` library, checks every row against :data:`FIELDS` and returns a
    :class:`Dataset` of frozen :class:`Item` s. A bad row is one :class:`DataError` line naming
    the file, the row, the field, what was expected and what was found.
  * images resolve against an extracted folder or the release zip; a missing image is
    reported (row and path) when it is opened, or for all items at once by
    :meth:`Dataset.check_images`.
  * :func:`build_prompt` writes the two prompting regimes of the reference code (direct JSON
    answer for open-weight models, in-language chain of thought for closed ones) as chat
    messages plus an ordered list of the images they refer to; :func:`render` turns them
    into the model's text with its chat template, writing each ``<image>`` placeholder as
    the model family's own image marker (:func:`image_marker`).
  * :func:`evaluate` is the harness behind ``launch.eval --benchmark=kaleidoscope``. A
    vision-language model (the ``qwen_vl`` family) scores every item: its prompts carry
    ``<|vision_start|><|image_pad|><|vision_end|>`` where the placeholders were, and the
    images (question first, then option images in option order, each resized to
    :attr:`Prompt.image_size`) are read lazily from the folder or zip and handed to
    :func:`jaxlab.evals.generation.generate_outputs`, which patches them with the model
    directory's image processor config. Other families score the text-only items on request.

Decisions where the reference leaves a choice (spec section 3):

  * Multimodal predicate: an item is multimodal if it has a non-empty ``image`` path OR an
    option that is a PNG path. The dataset card counts 11,459 multimodal items and a port
    testing only ``image`` counts 11,457; the two items with image options are our guess for
    the difference (not verified against the release).
  * The direct regime ends with the in-language Answer keyword (``Respuesta:``, ``Ответ:``,
    ...) as the answer cue rather than the English ``ANSWER:``: the keyword table gives it
    and the rest of the user turn is in-language too.
  * The CoT regime labels options with the English ``Options:``, as the reference does.
  * Image placeholders (:data:`IMAGE_TOKEN`): there is exactly one per attached image, in the
    order of :attr:`Prompt.images`. The first ``<image>`` in the question text marks where
    the question's image goes; further ones, and any ``<image>`` in a question without an
    image or in option text, are removed. A question without its own marker gets its image
    on the first line (the reference puts the image before the text). An option that is a
    PNG path becomes the line ``X. [image] <image>`` and its image is attached in option
    order, after the question's image.
  * Resume key: a hash of the reference's de-duplication fields (question, file_name,
    image_png, source, original_question_num). If the release repeats a key, the repeats
    get ``~1``, ``~2``, ... in release order, so keys stay unique and stable.
  * Domain breakdown: the row's own ``general_category_en`` when set, else :data:`DOMAINS`
    applied to ``category_en`` ("Other" for an unknown subject).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import glob
import hashlib
import io
import os
import sys
import tempfile
import zipfile
from typing import Any, Mapping, Sequence

from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import mcq

# ISO-639-1 codes of the 18 languages (spec 3.2).
LANGUAGES: tuple[str, ...] = (
    "ar", "bn", "de", "en", "es", "fa", "fr", "hi", "hr", "hu", "lt", "ne", "nl", "pt", "ru",
    "sr", "te", "uk")

# (Question, Options, Answer) keywords of the direct-answer prompt, as the reference's table.
KEYWORDS: dict[str, tuple[str, str, str]] = {
    "en": ("Question", "Options", "Answer"),
    "es": ("Pregunta", "Opciones", "Respuesta"),
    "fr": ("Question", "Options", "Réponse"),
    "de": ("Frage", "Optionen", "Antwort"),
    "nl": ("Vraag", "Opties", "Antwoord"),
    "pt": ("Pergunta", "Opções", "Resposta"),
    "hu": ("Kérdés", "Lehetőségek", "Válasz"),
    "hr": ("Pitanje", "Opcije", "Odgovor"),
    "sr": ("Pitanje", "Opcije", "Odgovor"),  # Latin keywords, as in the reference
    "lt": ("Klausimas", "Pasirinkimai", "Atsakymas"),
    "ru": ("Вопрос", "Варианты", "Ответ"),
    "uk": ("Питання", "Варіанти", "Відповідь"),
    "ar": ("السؤال", "الخيارات", "الإجابة"),
    "fa": ("سؤال", "گزینه‌ها", "پاسخ"),
    "hi": ("प्रश्न", "विकल्प", "उत्तर"),
    "ne": ("प्रश्न", "विकल्पहरू", "उत्तर"),
    "bn": ("প্রশ্ন", "বিকল্প", "উত্তর"),
    "te": ("ప్రశ్న", "ఎంపికలు", "సమాధానం"),
}

_LATIN = ("en", "es", "fr", "de", "nl", "pt", "hu", "hr", "lt")
# Script class of the reference's analysis (sr counts as non-Latin there).
SCRIPT: dict[str, str] = {l: "Latin" if l in _LATIN else "non-Latin" for l in LANGUAGES}

_MID_LOW = ("uk", "bn", "lt", "te", "ne")
# Resource level of the reference's analysis.
RESOURCE: dict[str, str] = {l: "Mid/Low" if l in _MID_LOW else "High" for l in LANGUAGES}

_DOMAIN_SUBJECTS = {
    "STEM": ("Mathematics", "Chemistry", "Biology", "Physics", "Informatics", "Engineering"),
    "Health Sciences": ("Medicine", "Health"),
    "Humanities & Culture": ("Language", "Literature", "Linguistics", "Literature & Linguistics",
                             "History", "Philosophy", "Culture", "Religion"),
    "Social Sciences": ("Geography", "Social Sciences", "Economics", "Sociology"),
    "Reasoning": ("Reasoning",),
    "Practical Skills & General Knowledge": ("General Knowledge", "Driving License", "Design"),
}
# Subject (``category_en``) -> domain, from the reference's preprocessing; see :func:`domain`.
DOMAINS: dict[str, str] = {s: d for d, subjects in _DOMAIN_SUBJECTS.items() for s in subjects}

# The 18 fields of a row and their types; ``(str, None)``: a string or null.
FIELDS: dict[str, Any] = {
    "language": str, "country": str, "file_name": str, "source": str, "license": str,
    "level": str, "category_en": str, "category_original_lang": str,
    "original_question_num": str, "question": str, "options": list, "answer": int,
    "image_png": str, "image_information": str, "image_type": str,
    "parallel_question_id": str, "image": (str, None), "general_category_en": str,
}
# Metadata strings that may be null in a release (read as ""); the others must be set.
_NULLABLE = frozenset(FIELDS) - {"language", "question", "options", "answer"}

REGIMES = ("direct", "cot")
IMAGE_TOKEN = "<image>"
LETTERS = mcq.LETTERS  # option letters
# Prefix of the image paths inside the release's data.zip.
ZIP_PREFIX = "final_data/"
# The answer-extraction rules of each regime.
RULES = {"direct": mcq.DIRECT_RULES, "cot": mcq.COT_RULES}
# The model family whose checkpoints can see the images.
VLM_FAMILY = "qwen_vl"


def domain(subject: str) -> str:
  """The domain of a subject (``category_en``), "Other" if unknown."""
  return DOMAINS.get(subject, "Other")


def _is_png_path(text: str) -> bool:
  return text.strip().lower().endswith(".png")


@dataclasses.dataclass(frozen=True)
class Item:
  """One row of the release (fields as :data:`FIELDS`; options as a tuple).

  ``index`` is the row number in the release (after concatenating its parquet files in name
  order); ``repeat`` counts earlier rows with the same reference key (0 almost always).
  """
  index: int
  language: str
  country: str
  file_name: str
  source: str
  license: str
  level: str
  category_en: str
  category_original_lang: str
  original_question_num: str
  question: str
  options: tuple[str, ...]
  answer: int
  image_png: str
  image_information: str
  image_type: str
  parallel_question_id: str
  image: str | None
  general_category_en: str
  repeat: int = 0

  @property
  def key(self) -> str:
    """Stable id: a hash of the reference's resume fields (``~n`` appended for repeats)."""
    fields = (self.question, self.file_name, self.image_png, self.source,
              self.original_question_num)
    digest = hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()[:20]
    return digest if not self.repeat else f"{digest}~{self.repeat}"

  @property
  def image_options(self) -> bool:
    """Whether some option is an image (a PNG path) rather than text."""
    return any(_is_png_path(o) for o in self.options)

  @property
  def is_multimodal(self) -> bool:
    """A non-empty ``image`` path or an image option (see the module docstring)."""
    return bool(self.image) or self.image_options

  @property
  def num_options(self) -> int:
    return len(self.options)

  def groups(self) -> dict[str, str]:
    """The breakdowns this item is scored in."""
    if self.image_type:
      image_type = self.image_type
    else:
      image_type = "unknown" if self.is_multimodal else "none"
    return {
        "language": self.language,
        "modality": "multimodal" if self.is_multimodal else "text-only",
        "domain": self.general_category_en or domain(self.category_en),
        "subject": self.category_en or "unknown",
        "image_type": image_type,
        "script": SCRIPT[self.language],
        "resource": RESOURCE[self.language],
    }


def _type_name(value: Any) -> str:
  return "null" if value is None else type(value).__name__


def _expected(spec: Any) -> str:
  if spec is list:
    return "a list of strings"
  if isinstance(spec, tuple):
    return "a string or null"
  return spec.__name__


def item_from_row(row: Mapping[str, Any], index: int, where: str = "data") -> Item:
  """Checks one release row and returns its :class:`Item`.

  Raises:
    DataError: ``"<where> row <index>: field '<name>': expected ..., got ..."``.
  """
  def bad(name: str, expected: str, got: str) -> DataError:
    return DataError(f"{where} row {index}: field '{name}': expected {expected}, got {got}")

  values: dict[str, Any] = {}
  for name, spec in FIELDS.items():
    if name not in row:
      raise bad(name, _expected(spec), "no such field")
    v = row[name]
    if v is None and name in _NULLABLE:
      values[name] = None if name == "image" else ""
      continue
    if spec is list:
      if not isinstance(v, (list, tuple)) or not all(isinstance(o, str) for o in v):
        got = (_type_name(v) if not isinstance(v, (list, tuple))
               else f"a list with {', '.join(sorted({_type_name(o) for o in v}))} elements")
        raise bad(name, _expected(spec), got)
      if len(v) < 2 or len(v) > len(LETTERS):
        raise bad(name, f"2 to {len(LETTERS)} options", f"{len(v)}")
      v = tuple(v)
    elif spec is int:
      if isinstance(v, bool) or not isinstance(v, int):
        raise bad(name, "int", f"{_type_name(v)} {v!r}")
    elif not isinstance(v, str):
      raise bad(name, _expected(spec), f"{_type_name(v)} {v!r}"[:80])
    values[name] = v
  if values["language"] not in KEYWORDS:
    raise bad("language", f"one of {' '.join(LANGUAGES)}", repr(values["language"]))
  n = len(values["options"])
  if not 0 <= values["answer"] < n:
    raise bad("answer", f"an option index in 0..{n - 1} ({n} options)", str(values["answer"]))
  return Item(index=index, **values)


def _read_columns(data: str) -> dict[str, list[Any]]:
  """The release's columns (name -> values), read from local files with ``datasets``.

  Parquet goes through a throw-away cache folder, so nothing is left in the user's datasets
  cache and a rewritten file is never served from a stale cache.
  """
  import datasets  # pylint: disable=import-outside-toplevel
  if not os.path.exists(data):
    raise DataError(f"{data}: no such file or folder (expected a parquet file, a folder of "
                    "parquet files or a datasets.save_to_disk folder)")
  restore_bars = datasets.is_progress_bar_enabled()
  if restore_bars:
    datasets.disable_progress_bars()
  try:
    if os.path.isdir(data) and (os.path.isfile(os.path.join(data, "state.json")) or
                                os.path.isfile(os.path.join(data, "dataset_dict.json"))):
      ds = datasets.load_from_disk(data)
      if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
          raise DataError(f"{data}: a saved DatasetDict without a 'train' split "
                          f"(splits: {', '.join(ds)})")
        ds = ds["train"]
      return ds.to_dict()
    if os.path.isdir(data):
      parquet = sorted(glob.glob(os.path.join(data, "**", "*.parquet"), recursive=True))
      if not parquet:
        raise DataError(f"{data}: no *.parquet files in the folder and not a "
                        "datasets.save_to_disk folder")
    else:
      parquet = [data]
    with tempfile.TemporaryDirectory(prefix="jaxlab-kaleidoscope-") as cache:
      ds = datasets.load_dataset("parquet", data_files={"train": parquet}, split="train",
                                 cache_dir=cache, keep_in_memory=True)
      return ds.to_dict()
  except DataError:
    raise
  except Exception as e:  # pyarrow/datasets raise many types; report them as one line
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{data}: cannot read the dataset: {msg}") from None
  finally:
    if restore_bars:
      datasets.enable_progress_bars()


def load(data: str, *, images: str | None = None, languages: Sequence[str] | None = None,
         limit: int = 0) -> "Dataset":
  """Reads and checks the release at ``data``.

  Args:
    data: a parquet file, a folder of parquet files (searched recursively, read in name
      order) or a ``datasets.save_to_disk`` folder (a saved DatasetDict: its ``train``).
    images: an extracted image folder, the release's ``data.zip``, or None / "" (items with
      images are still listed; opening an image raises DataError).
    languages: keep only these codes (None or empty: all).
    limit: keep at most this many items per language, in release order (0: all).

  Raises:
    DataError: unreadable data, or a row that does not fit :data:`FIELDS` (every row is
      checked, also those filtered out).
    ConfigError: an unknown language code in ``languages`` or a negative ``limit``.
  """
  wanted = tuple(languages or ())
  for code in wanted:
    if code not in KEYWORDS:
      raise ConfigError(f"languages: unknown language code {code!r}; known: "
                        f"{', '.join(LANGUAGES)}")
  if limit < 0:
    raise ConfigError(f"limit: expected >= 0, got {limit}")
  columns = _read_columns(data)
  names = list(columns)
  num_rows = len(next(iter(columns.values()))) if columns else 0
  for name in FIELDS:
    if name not in columns and num_rows:
      raise DataError(f"{data} row 0: field '{name}': expected {_expected(FIELDS[name])}, got no "
                      f"such field (columns: {', '.join(names)})")
  items, seen = [], {}
  for i in range(num_rows):
    row = {name: columns[name][i] for name in FIELDS}
    item = item_from_row(row, i, where=data)
    base = item.key
    if base in seen:
      seen[base] += 1
      item = dataclasses.replace(item, repeat=seen[base])
    else:
      seen[base] = 0
    if wanted and item.language not in wanted:
      continue
    items.append(item)
  return Dataset(items=first_per_language(items, limit), data=data, images=images or None)


def first_per_language(items: Sequence[Item], limit: int) -> list[Item]:
  """At most ``limit`` items per language, in the given order (0: all)."""
  if not limit:
    return list(items)
  taken: dict[str, int] = {}
  kept = []
  for it in items:
    if taken.get(it.language, 0) < limit:
      taken[it.language] = taken.get(it.language, 0) + 1
      kept.append(it)
  return kept


class Dataset:
  """Checked items plus the image source they refer to.

  Attributes:
    items: the kept items, in release order.
    data: where they were read from (named in errors).
    images: an image folder, a zip file, or None.
  """

  def __init__(self, items: list[Item], data: str, images: str | None = None):
    self.items = items
    self.data = data
    self.images = images
    self._zip: zipfile.ZipFile | None = None
    self._members: set[str] = set()
    self._is_zip = images is not None and os.path.isfile(images)
    if images is not None:
      if self._is_zip:
        try:
          self._zip = zipfile.ZipFile(images)
        except zipfile.BadZipFile:
          raise DataError(f"{images}: expected an image folder or a zip file, got a file that "
                          "is not a zip") from None
        self._members = set(self._zip.namelist())
      elif not os.path.isdir(images):
        raise DataError(f"{images}: no such image folder or zip file")

  def __len__(self) -> int:
    return len(self.items)

  def close(self) -> None:
    """Closes the release zip, if one is open (a folder needs nothing)."""
    if self._zip is not None:
      self._zip.close()
      self._zip = None
      self._members = set()

  def __enter__(self) -> "Dataset":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __iter__(self):
    return iter(self.items)

  def _candidates(self, rel: str) -> list[str]:
    rel = rel.strip().lstrip("/")
    names = [rel]
    if rel.startswith(ZIP_PREFIX):
      names.append(rel[len(ZIP_PREFIX):])
    else:
      names.append(ZIP_PREFIX + rel)
    return names

  def _find(self, rel: str) -> str | None:
    """The zip member or file path that holds image ``rel``, or None."""
    if self._is_zip and self._zip is None:
      raise DataError(f"{self.images}: the dataset's image zip was closed")
    for name in self._candidates(rel):
      if self._is_zip:
        if name in self._members:
          return name
      elif os.path.isfile(os.path.join(self.images, name)):
        return os.path.join(self.images, name)
    return None

  def _option_path(self, item: Item, k: int) -> list[str]:
    """Where option ``k``'s image may be: as written, or beside the question's image."""
    rel = item.options[k].strip()
    out = [rel]
    if item.image and "/" not in rel:
      out.append(os.path.dirname(item.image) + "/" + rel)
    return out

  def _open(self, item: Item, rels: list[str], what: str):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    if self.images is None:
      raise DataError(f"{self.data} row {item.index}: {what} {rels[0]!r} cannot be opened: no "
                      "image folder or zip was given")
    for rel in rels:
      found = self._find(rel)
      if found is None:
        continue
      if self._zip is not None:
        raw = io.BytesIO(self._zip.read(found))
      else:
        with open(found, "rb") as f:
          raw = io.BytesIO(f.read())
      try:
        image = Image.open(raw)
        image.load()
      except Exception as e:  # PIL raises several types for a broken file
        raise DataError(f"{self.images}: {found}: not a readable image ({e})") from None
      return image.convert("RGB")
    raise DataError(f"{self.data} row {item.index}: {what} {rels[0]!r} not found in "
                    f"{self.images}")

  def open_image(self, item: Item):
    """The question's image of ``item`` as an RGB ``PIL.Image``.

    Raises:
      DataError: the item has no image, no image source was given, or the file is missing.
    """
    if not item.image:
      raise DataError(f"{self.data} row {item.index}: the item has no image")
    return self._open(item, [item.image], "image")

  def open_option_image(self, item: Item, k: int):
    """The image of option ``k`` (a PNG path) as an RGB ``PIL.Image``."""
    if not 0 <= k < item.num_options or not _is_png_path(item.options[k]):
      raise DataError(f"{self.data} row {item.index}: option {k} is not an image")
    return self._open(item, self._option_path(item, k), f"option {k} image")

  def prompt_images(self, item: Item, prompt: "Prompt") -> list:
    """The images ``prompt`` refers to, in placeholder order, resized to its ``image_size``."""
    out = []
    for kind, k in prompt.images:
      image = self.open_image(item) if kind == "question" else self.open_option_image(item, k)
      if prompt.image_size is not None and image.size != tuple(prompt.image_size):
        image = image.resize(tuple(prompt.image_size))
      out.append(image)
    return out

  def check_images(self) -> None:
    """Checks that every image the items refer to exists (without decoding them).

    Raises:
      DataError: naming the first missing image's row and path and how many are missing.
    """
    missing = []
    for item in self.items:
      wanted = []
      if item.image:
        wanted.append(("image", [item.image]))
      for k, option in enumerate(item.options):
        if _is_png_path(option):
          wanted.append((f"option {k} image", self._option_path(item, k)))
      for what, rels in wanted:
        if self.images is None or all(self._find(r) is None for r in rels):
          missing.append((item, what, rels[0]))
    if missing:
      item, what, rel = missing[0]
      source = self.images or "(no image folder or zip given)"
      raise DataError(f"{self.data} row {item.index}: {what} {rel!r} not found in {source} "
                      f"({len(missing)} missing images in all)")


@dataclasses.dataclass(frozen=True)
class PromptTexts:
  """The fixed texts of the two regimes. OUR OWN wording, not the paper's.

  The reference's system messages and their 18 translations are not reproduced here; a user
  who has them can pass them with :meth:`from_file`.

  Attributes:
    direct_system: English system message of the direct regime (JSON answer only).
    direct_instruction: English instruction line opening the direct regime's user turn.
    cot_system: language code -> in-language system message of the CoT regime, asking to
      reason step by step and end with ``<ANSWER> X </ANSWER>``.
  """
  direct_system: str
  direct_instruction: str
  cot_system: dict[str, str]

  @classmethod
  def from_file(cls, path: str) -> "PromptTexts":
    """Our texts with the fields of the JSON object in ``path`` replacing them.

    ``cot_system`` may give only some languages. Raises ConfigError for an unreadable file,
    an unknown key or language, or a value that is not a string.
    """
    from jaxlab.evals import benchmark  # pylint: disable=import-outside-toplevel
    given = benchmark.read_texts_file(path, [f.name for f in dataclasses.fields(cls)])
    out = dataclasses.asdict(DEFAULT_TEXTS)
    for key, value in given.items():
      if key == "cot_system":
        if not isinstance(value, dict):
          raise ConfigError(f"{path}: key 'cot_system': expected an object language -> text")
        for lang, text in value.items():
          if lang not in KEYWORDS:
            raise ConfigError(f"{path}: unknown key 'cot_system.{lang}'; known languages: "
                              f"{', '.join(LANGUAGES)}")
          if not isinstance(text, str):
            raise ConfigError(f"{path}: key 'cot_system.{lang}': expected a string")
          out["cot_system"][lang] = text
      elif not isinstance(value, str):
        raise ConfigError(f"{path}: key {key!r}: expected a string, got "
                          f"{type(value).__name__}")
      else:
        out[key] = value
    return cls(**out)


DEFAULT_TEXTS = PromptTexts(
    direct_system=(
        "You answer multiple-choice exam questions. Reply only with a JSON object of the form "
        '{"choice": "X"}, where X is the letter of the correct option, and nothing else.'),
    direct_instruction=(
        "Answer the following multiple-choice question by choosing one of the lettered "
        "options."),
    cot_system={
        "en": "Think step by step before answering. End your reply with the letter of the "
              "correct option in the form <ANSWER> X </ANSWER>.",
        "es": "Piensa paso a paso antes de responder. Termina tu respuesta con la letra de la "
              "opción correcta en la forma <ANSWER> X </ANSWER>.",
        "fr": "Réfléchis étape par étape avant de répondre. Termine ta réponse par la lettre de "
              "la bonne option sous la forme <ANSWER> X </ANSWER>.",
        "de": "Denke Schritt für Schritt nach, bevor du antwortest. Beende deine Antwort mit dem "
              "Buchstaben der richtigen Option in der Form <ANSWER> X </ANSWER>.",
        "nl": "Denk stap voor stap na voordat je antwoordt. Sluit je antwoord af met de letter "
              "van de juiste optie in de vorm <ANSWER> X </ANSWER>.",
        "pt": "Pense passo a passo antes de responder. Termine sua resposta com a letra da "
              "opção correta no formato <ANSWER> X </ANSWER>.",
        "hu": "Gondolkodj lépésről lépésre, mielőtt válaszolsz. A válaszod végén add meg a "
              "helyes lehetőség betűjelét <ANSWER> X </ANSWER> formában.",
        "hr": "Razmisli korak po korak prije odgovora. Završi odgovor slovom točne opcije u "
              "obliku <ANSWER> X </ANSWER>.",
        "sr": "Размисли корак по корак пре одговора. Заврши одговор словом тачне опције у "
              "облику <ANSWER> X </ANSWER>.",
        "lt": "Prieš atsakydamas mąstyk žingsnis po žingsnio. Atsakymo pabaigoje nurodyk "
              "teisingo varianto raidę forma <ANSWER> X </ANSWER>.",
        "ru": "Рассуждай шаг за шагом, прежде чем ответить. Закончи ответ буквой правильного "
              "варианта в виде <ANSWER> X </ANSWER>.",
        "uk": "Міркуй крок за кроком, перш ніж відповісти. Заверши відповідь літерою "
              "правильного варіанта у вигляді <ANSWER> X </ANSWER>.",
        "ar": "فكّر خطوة بخطوة قبل الإجابة. اختم إجابتك بحرف الخيار الصحيح بالشكل "
              "<ANSWER> X </ANSWER>.",
        "fa": "پیش از پاسخ دادن گام به گام فکر کن. پاسخت را با حرف گزینهٔ درست به شکل "
              "<ANSWER> X </ANSWER> تمام کن.",
        "hi": "उत्तर देने से पहले चरण-दर-चरण सोचें। अपने उत्तर के अंत में सही विकल्प का अक्षर "
              "<ANSWER> X </ANSWER> के रूप में लिखें।",
        "ne": "उत्तर दिनुअघि चरणबद्ध रूपमा सोच्नुहोस्। आफ्नो उत्तरको अन्त्यमा सही विकल्पको अक्षर "
              "<ANSWER> X </ANSWER> को रूपमा लेख्नुहोस्।",
        "bn": "উত্তর দেওয়ার আগে ধাপে ধাপে চিন্তা করুন। আপনার উত্তরের শেষে সঠিক বিকল্পের অক্ষরটি "
              "<ANSWER> X </ANSWER> আকারে লিখুন।",
        "te": "సమాధానం ఇచ్చే ముందు దశలవారీగా ఆలోచించండి. మీ సమాధానం చివర సరైన ఎంపిక అక్షరాన్ని "
              "<ANSWER> X </ANSWER> రూపంలో రాయండి.",
    })


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A model prompt: chat messages and the images their placeholders stand for.

  Attributes:
    messages: ``[{"role": "system", ...}, {"role": "user", ...}]``.
    images: one reference per :data:`IMAGE_TOKEN` in the user turn, in the same order:
      ``("question", -1)`` for the question's image, ``("option", k)`` for option k's.
    num_options: number of options (valid answers are ``LETTERS[:num_options]``).
    language: the item's language code.
    image_size: (width, height) images are resized to (None: original size).
  """
  messages: list[dict[str, str]]
  images: tuple[tuple[str, int], ...]
  num_options: int
  language: str
  image_size: tuple[int, int] | None = (512, 512)


def check_regime(regime: str) -> str:
  if regime not in REGIMES:
    raise ConfigError(f"regime: unknown {regime!r}; expected one of {', '.join(REGIMES)}")
  return regime


def _question_text(item: Item) -> tuple[str, bool]:
  """The question with at most one image marker kept; whether it was kept."""
  parts = item.question.split(IMAGE_TOKEN)
  if len(parts) == 1:
    return item.question, False
  if not item.image:
    return "".join(parts), False
  return parts[0] + IMAGE_TOKEN + "".join(parts[1:]), True


def _option_lines(item: Item) -> tuple[list[str], list[tuple[str, int]]]:
  lines, images = [], []
  for k, option in enumerate(item.options):
    if _is_png_path(option):
      lines.append(f"{LETTERS[k]}. [image] {IMAGE_TOKEN}")
      images.append(("option", k))
    else:
      lines.append(f"{LETTERS[k]}. {option.replace(IMAGE_TOKEN, '')}")
  return lines, images


def build_prompt(item: Item, regime: str, texts: PromptTexts = DEFAULT_TEXTS, *,
                 image_size: tuple[int, int] | None = (512, 512)) -> Prompt:
  """The chat prompt of ``item`` in ``regime`` ("direct" or "cot"); see the module docstring.

  Direct: system ``texts.direct_system``; user: [image], the instruction line,
  ``<Question>: ...``, ``<Options>:``, ``A. ...`` lines and the ``<Answer>:`` cue (in-language
  keywords of :data:`KEYWORDS`). CoT: system ``texts.cot_system[language]``; user: [image],
  the question, ``Options:`` and the option lines.
  """
  check_regime(regime)
  question, marked = _question_text(item)
  images: list[tuple[str, int]] = []
  lines: list[str] = []
  if item.image:
    images.append(("question", -1))
    if not marked:
      lines.append(IMAGE_TOKEN)
  option_lines, option_images = _option_lines(item)
  images.extend(option_images)
  if regime == "direct":
    q_kw, o_kw, a_kw = KEYWORDS[item.language]
    lines += [texts.direct_instruction, f"{q_kw}: {question}", f"{o_kw}:", *option_lines,
              f"{a_kw}:"]
    system = texts.direct_system
  else:
    lines += [question, "Options:", *option_lines]
    if item.language not in texts.cot_system:
      raise ConfigError(f"prompt texts: cot_system has no text for language {item.language!r}")
    system = texts.cot_system[item.language]
  messages = [{"role": "system", "content": system},
              {"role": "user", "content": "\n".join(lines)}]
  return Prompt(messages=messages, images=tuple(images), num_options=item.num_options,
                language=item.language,
                image_size=None if image_size is None else tuple(image_size))


def render(prompt: Prompt, tokenizer: Any, marker: str = IMAGE_TOKEN) -> str:
  """The model-ready text of ``prompt``.

  Each :data:`IMAGE_TOKEN` placeholder of the user turn becomes ``marker`` first: a
  vision-language model's own image marker (for the ``qwen_vl`` family
  ``<|vision_start|><|image_pad|><|vision_end|>``, :func:`image_marker`), so that its encoder
  finds one marker per entry of :attr:`Prompt.images`, in the same order. The default keeps
  ``<image>`` (a text-only model never sees an image item).

  With a tokenizer that has a ``chat_template``:
  ``tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)``.
  Otherwise (or ``tokenizer=None``) the plain join ``system + "\\n\\n" + user + "\\n"``.
  """
  messages = [dict(m) for m in prompt.messages]
  if marker != IMAGE_TOKEN:
    user = messages[1]
    user["content"] = user["content"].replace(IMAGE_TOKEN, marker)
  if tokenizer is not None and getattr(tokenizer, "chat_template", None):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  system, user = messages[0]["content"], messages[1]["content"]
  return f"{system}\n\n{user}\n"


def image_marker(family: str) -> str:
  """What a model family's prompts write for one image (``<image>`` for text-only ones)."""
  if family == VLM_FAMILY:
    from jaxlab.models.qwen_vl import inputs  # pylint: disable=import-outside-toplevel
    return inputs.IMAGE_SPAN
  return IMAGE_TOKEN


def rules(regime: str):
  """The ordered answer-extraction rules of ``regime`` (from :mod:`jaxlab.evals.mcq`)."""
  return RULES[check_regime(regime)]


# -- the harness: launch.eval --benchmark=kaleidoscope ---------------------------------------------

BREAKDOWNS = ("language", "modality", "domain", "subject", "image_type", "script", "resource")


def evaluate(args: Any) -> dict[str, Any]:
  """Scores a model directory on the benchmark (``jaxlab.evals.BenchmarkArgs``); resumable.

  A vision-language model (family ``qwen_vl``) scores all selected items, only the
  text-only ones with ``text_only``, or only the multimodal ones with ``multimodal_only``:
  the paper's headline (e.g. 33.7% for Qwen2.5-VL-3B) is total accuracy macro over languages
  on those. Its prompts are rendered with the family's image marker
  (see :func:`render`); each item's images (:meth:`Dataset.prompt_images`: placeholder order,
  resized to 512x512) are opened from ``args.images`` when their batch is encoded, and patched
  with the model directory's ``preprocessor_config.json``. Text-only models (every other
  family) score the text-only items and must be asked to (``text_only``): a result over a
  silently dropped subset would read as the benchmark's number.

  Raises:
    ConfigError: bad arguments, image items for a text-only model without ``text_only``, or
      nothing left to score.
    DataError: a bad release row, or a missing or unreadable image (its row and path named).
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.evals import benchmark, generation  # pylint: disable=import-outside-toplevel

  check_regime(args.regime)  # unknown languages are refused by load()
  texts = PromptTexts.from_file(args.texts) if args.texts else DEFAULT_TEXTS
  decoding = generation.Decoding(max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, top_p=args.top_p, seed=args.seed)
  family = models.family_for(args.model)
  vlm = family == VLM_FAMILY
  # The dataset stays open for the whole run: a vision-language run reads its images lazily,
  # batch by batch, from the folder or the zip.
  ds = load(args.data, images=args.images or None, languages=args.languages or None)
  try:
    items = _select(ds.items, args, family)
    model, tokenizer = models.from_pretrained(args.model, dtype=jnp.dtype(args.dtype))
    image_config = images = None
    if vlm:
      from jaxlab.models.qwen_vl import processor  # pylint: disable=import-outside-toplevel
      image_config = processor.ImageProcessorConfig.from_dir(args.model)
    marker = image_marker(family)
    mcq_items, prompts = [], []
    for it in items:
      prompt = build_prompt(it, args.regime, texts)
      prompts.append(prompt)
      mcq_items.append(benchmark.McqItem(
          key=it.key, prompt=render(prompt, tokenizer, marker), answer=it.answer,
          num_options=prompt.num_options, language=it.language, groups=it.groups(),
          record={"index": it.index, "question": it.question}))
    settings = {"benchmark": "kaleidoscope", "model": args.model,
                "data": args.data, "regime": args.regime,
                "languages": list(args.languages), "text_only": bool(args.text_only),
                "multimodal_only": bool(args.multimodal_only),
                "limit": args.limit, "texts": args.texts, "dtype": args.dtype,
                "decoding": dataclasses.asdict(decoding), "batch_size": args.batch_size,
                "num_items": len(mcq_items)}
    if vlm:
      images = _LazyImages(ds, items, prompts)
      size = prompts[0].image_size
      settings["image_size"] = None if size is None else list(size)
    bar = metrics_lib.Progress(len(mcq_items), unit="items", stream=sys.stderr)
    try:
      return benchmark.run_mcq(
          f"kaleidoscope_{args.regime}", model, tokenizer, mcq_items, args.workdir,
          rules=rules(args.regime), settings=settings, breakdown_keys=BREAKDOWNS,
          decoding=decoding, batch_size=args.batch_size, progress=lambda d, _: bar.update(d),
          images=images, image_config=image_config)
    finally:
      bar.close()
  finally:
    ds.close()


def _select(items: Sequence[Item], args: Any, family: str) -> list[Item]:
  """The items ``evaluate`` scores: only the text-only ones on request (a request a text-only
  model must make when there are image items) or only the multimodal ones (the paper's
  headline set), then at most ``args.limit`` per language."""
  if args.text_only and args.multimodal_only:
    raise ConfigError("--text_only and --multimodal_only select disjoint items: pass one")
  multimodal = [it for it in items if it.is_multimodal]
  if args.multimodal_only and family != VLM_FAMILY:
    raise ConfigError(f"--multimodal_only needs a vision-language model; {args.model} is a "
                      f"{family!r} model")
  if family != VLM_FAMILY and multimodal and not args.text_only:
    raise ConfigError(
        f"{args.data}: {len(multimodal)} of {len(items)} items have images, which need a "
        f"vision-language model; {args.model} is a {family!r} model. Pass --text_only to "
        f"score the {len(items) - len(multimodal)} text-only items")
  # The per-language limit applies after the text-only filter: "--text_only --limit=5" means
  # five text-only items per language.
  if args.text_only:
    items = [it for it in items if not it.is_multimodal]
  elif args.multimodal_only:
    items = multimodal
  items = first_per_language(items, args.limit)
  if not items:
    raise ConfigError(f"{args.data}: no items to score with these settings")
  return list(items)


class _LazyImages(collections.abc.Sequence):
  """Per item, the images its prompt refers to (:meth:`Dataset.prompt_images`: placeholder
  order, resized to :attr:`Prompt.image_size`), opened on access, so that a run over the
  whole release holds one batch of images at a time. A missing image is a DataError naming
  the row and the path."""

  def __init__(self, ds: Dataset, items: Sequence[Item], prompts: Sequence[Prompt]):
    self._ds, self._items, self._prompts = ds, items, prompts

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    return self._ds.prompt_images(self._items[i], self._prompts[i])
