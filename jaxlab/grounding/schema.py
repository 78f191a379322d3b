"""GroundCUA record schemas (spec §2.2): annotations, instruction tuning, SFT and RL rows.

A dataset directory in the release's layout::

  images/<Platform>/<hash>.png        screenshots
  data/<Platform>/<hash>.json         one JSON list of element records per screenshot
  instruction_tuning/<kind>.json      JSON lists of instruction records (file names of §2.2)
  sft.jsonl, rl.jsonl                 training rows (ours: one JSON object per line)
  tasks.jsonl                         the RL rows as LLM task rows (:func:`task_row`)

Records:

* :class:`Annotation` (``data/...json``): ``image_path`` ("<Platform>/<hash>.png", relative
  to ``images/``), ``bbox`` ``[x1, y1, x2, y2]`` in original pixels, ``text`` (the element's
  label), ``category`` (one of :data:`CATEGORIES`, or absent).
* :class:`InstructionRecord`: ``id`` (the screenshot hash), ``bbox``, ``text``,
  ``category``, ``platform``, ``all_instructions`` {``description``,
  ``functional_instruction``, ``simple_instruction``} and ``instruction`` (the one used for
  training). ``spatial_data.json`` and ``functional_instructions_extra.json`` store a
  ``coordinate`` (the element's centre, original pixels) instead of a box
  (:class:`CoordinateInstruction`); :func:`recover_box` finds the box back.
* :class:`SFTRecord` (ShareGPT, as LLaMA-Factory reads it): ``conversations`` = [{from: human,
  value: "<image>" + instruction}, {from: function_call, value: the call's JSON}],
  ``system``, ``images`` [path], ``tool``.
* :class:`RLRecord`: ``system``, ``instruction``, ``images``, ``gt_response`` (the target
  answer text), ``gt_bbox``; ours adds ``image_size`` and ``original_size``.
  :func:`task_row` turns one into a row of the LLM trainers' task files (``tasks.jsonl``).

**Frames.** Annotations and instruction records are in original pixels, as released. SFT
and RL rows are in the *resized* frame the model sees (:mod:`jaxlab.grounding.frames`): the
SFT target point, the RL ``gt_bbox`` and ``image_size`` (resized ``[W, H]``), with the
original ``[W, H]`` in ``original_size``. Given the image processor settings, the loaders
check that ``image_size`` is what the resize rule gives for the screenshot on disk, so a
dataset written for another resize setting fails loudly instead of training in the wrong
frame.

Every loader validates every row and raises :class:`~jaxlab.core.errors.DataError` with one
line naming the file, the line (JSONL) or index (JSON list) and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Sequence

from PIL import Image, UnidentifiedImageError

from jaxlab.core import files
from jaxlab.core.errors import DataError
from jaxlab.grounding import answer
from jaxlab.grounding import frames as frames_lib
from jaxlab.models.qwen_vl import processor

CATEGORIES = ("Button", "Menu", "Input", "Navigation", "Sidebar", "Visual", "Information",
              "Others")
IMAGE_TOKEN = "<image>"
INSTRUCTION_KEYS = ("description", "functional_instruction", "simple_instruction")

# Instruction-tuning file names of the release (§2.2); the last two hold coordinates.
DIRECT_DESCRIPTION = "direct_description_instructions.json"
DIRECT_TEXT = "direct_text_instructions.json"
DIRECT_ICON = "direct_icon_instructions.json"
FUNCTIONAL = "functional_instructions.json"
FUNCTIONAL_EXTRA = "functional_instructions_extra.json"
SPATIAL = "spatial_data.json"
COORDINATE_FILES = (FUNCTIONAL_EXTRA, SPATIAL)
INSTRUCTION_FILES = (DIRECT_DESCRIPTION, DIRECT_TEXT, DIRECT_ICON, FUNCTIONAL,
                     FUNCTIONAL_EXTRA, SPATIAL)

# Our own description of the one tool (the paper's exact text may be supplied instead).
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": answer.TOOL_NAME,
        "description": ("Act on the screen with the mouse. Coordinates are integer pixels "
                        "of the screenshot as shown, (0, 0) at its top left."),
        "parameters": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["left_click"],
                           "description": "What to do; left_click clicks at coordinate."},
                "coordinate": {"type": "array", "items": {"type": "integer"},
                               "description": "[x, y] of the point to act on."},
            },
            "required": ["action", "coordinate"],
        },
    },
}
SYSTEM_TEMPLATE = (
    "You operate a desktop computer through one tool, computer_use, which takes an action "
    "and an [x, y] pixel coordinate. The screen's resolution is {width}x{height}. Answer "
    "with a single call inside <tool_call></tool_call> tags, as a JSON object with the "
    "keys name and arguments.")


def system_prompt(width: int, height: int, template: str = SYSTEM_TEMPLATE) -> str:
  """The system text for a resized screen of ``width x height``.

  ``template`` may be any text (e.g. the paper's prompt read from a config file); its
  ``{width}`` and ``{height}`` are replaced, and no other brace is interpreted, so JSON
  inside the template is safe.
  """
  return template.replace("{width}", str(int(width))).replace("{height}", str(int(height)))


def system_format(template: str) -> str:
  """``template`` (any system text with ``{width}`` / ``{height}``, e.g. the paper's prompt
  read from a file) as a piece of an LLM trainer's ``data.prompt_format``: every other brace
  is escaped, and the size is read per row from its ``image_size`` (the resized ``[W, H]`` of
  :func:`task_row` rows), so each prompt names its own screen's resolution."""
  text = template.replace("{", "{{").replace("}", "}}")
  return text.replace("{{width}}", "{image_size[0]}").replace("{{height}}", "{image_size[1]}")


def read_system_template(path: str) -> str:
  """The system text of a UTF-8 file (a config's prompt file).

  Raises:
    ConfigError: the file does not exist or is not UTF-8 text (naming it).
  """
  from jaxlab.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  try:
    with open(path, encoding="utf-8") as f:
      return f.read().strip("\n")
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"system prompt file {path!r} cannot be read ({e})") from None


def tool_json() -> str:
  """The ``tool`` field of an SFT row: :data:`TOOL` as a JSON list."""
  return json.dumps([TOOL])


# -- field checks ---------------------------------------------------------------------------------


def _fail(where: str, field: str, expected: str, value: Any) -> DataError:
  shown = repr(value)
  if len(shown) > 80:
    shown = shown[:77] + "..."
  return DataError(f"{where}: field {field!r}: expected {expected}, got {shown}")


def _number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(obj: dict, field: str, size: int, where: str) -> tuple[float, ...]:
  value = obj.get(field)
  if not isinstance(value, (list, tuple)) or len(value) != size or not all(
      _number(v) for v in value):
    raise _fail(where, field, f"a list of {size} numbers", value)
  return tuple(value)


def _string(obj: dict, field: str, where: str, *, optional: bool = False,
            nonempty: bool = False) -> str | None:
  if field not in obj and optional:
    return None
  value = obj.get(field)
  if value is None and optional:
    return None
  if not isinstance(value, str) or (nonempty and not value.strip()):
    raise _fail(where, field, "a non-empty string" if nonempty else "a string", value)
  return value


def _object(row: Any, where: str) -> dict:
  if not isinstance(row, dict):
    raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
  return row


def _category(obj: dict, where: str) -> str | None:
  cat = _string(obj, "category", where, optional=True)
  if cat is not None and cat not in CATEGORIES:
    raise _fail(where, "category", f"one of {', '.join(CATEGORIES)}", cat)
  return cat


def _check_box_in(box: Sequence[float], size: Sequence[float], where: str,
                  field: str = "bbox") -> None:
  x1, y1, x2, y2 = box
  w, h = size
  if not (x1 < x2 and y1 < y2):
    raise _fail(where, field, "x1 < x2 and y1 < y2 (a non-empty box)", list(box))
  if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
    raise DataError(f"{where}: field {field!r}: box {list(box)} lies outside its image of "
                    f"{w}x{h} pixels")


def image_size(path: str, where: str) -> tuple[int, int]:
  """``(W, H)`` of a screenshot (the header only is read).

  Raises:
    DataError: the file is missing or not an image, naming ``where``.
  """
  if not os.path.isfile(path):
    raise DataError(f"{where}: screenshot {path!r} does not exist")
  try:
    with Image.open(path) as im:
      return im.size
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"{where}: screenshot {path!r} is not a readable image ({e})") from None


# -- annotations ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Annotation:
  """One element of a screenshot (``data/<Platform>/<hash>.json``), original pixels."""
  image_path: str
  bbox: tuple[float, float, float, float]
  text: str
  category: str | None = None

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"image_path": self.image_path, "bbox": list(self.bbox),
                           "text": self.text}
    if self.category is not None:
      out["category"] = self.category
    return out

  @classmethod
  def from_json(cls, obj: Any, where: str) -> "Annotation":
    obj = _object(obj, where)
    path = _string(obj, "image_path", where, nonempty=True)
    box = _numbers(obj, "bbox", 4, where)
    # The release's utilities swap reversed corners; we keep that reading.
    box = frames_lib.ordered_box(box, where)
    return cls(path, box, _string(obj, "text", where), _category(obj, where))


def dataset_root_of(annotation_file: str) -> str:
  """The dataset directory of ``<root>/data/<Platform>/<hash>.json``."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(annotation_file))))


def load_annotations(path: str, images_dir: str | None = None) -> list[Annotation]:
  """Reads and validates one annotation file.

  Args:
    path: ``<root>/data/<Platform>/<hash>.json``.
    images_dir: where ``image_path`` is relative to (default ``<root>/images``); the
      screenshot must exist and every box must lie inside it.

  Raises:
    DataError: ``path[index]: field ...`` for a bad record, a missing screenshot or a box
      outside its image.
  """
  rows = _read_json_list(path)
  images_dir = images_dir or os.path.join(dataset_root_of(path), "images")
  sizes: dict[str, tuple[int, int]] = {}
  out = []
  for i, row in enumerate(rows):
    where = f"{path}[{i}]"
    a = Annotation.from_json(row, where)
    if a.image_path not in sizes:
      sizes[a.image_path] = image_size(os.path.join(images_dir, a.image_path), where)
    _check_box_in(a.bbox, sizes[a.image_path], where)
    out.append(a)
  return out


def write_annotations(path: str, annotations: Iterable[Annotation]) -> None:
  """One annotation file (a JSON list), atomically."""
  files.write_json(path, [a.to_json() for a in annotations])


# -- instruction-tuning records ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InstructionRecord:
  """An instruction about one element, with its box in original pixels."""
  id: str
  bbox: tuple[float, float, float, float]
  text: str
  category: str | None
  platform: str
  all_instructions: dict[str, str]
  instruction: str

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "bbox": list(self.bbox), "text": self.text,
            "category": self.category, "platform": self.platform,
            "all_instructions": dict(self.all_instructions), "instruction": self.instruction}


@dataclasses.dataclass(frozen=True)
class CoordinateInstruction:
  """An instruction with the element's centre instead of its box (spatial, functional extra)."""
  id: str
  coordinate: tuple[float, float]
  platform: str
  instruction: str
  text: str | None = None
  category: str | None = None

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"id": self.id, "coordinate": list(self.coordinate),
                           "platform": self.platform, "instruction": self.instruction}
    if self.text is not None:
      out["text"] = self.text
    if self.category is not None:
      out["category"] = self.category
    return out


def _all_instructions(obj: dict, where: str) -> dict[str, str]:
  value = obj.get("all_instructions")
  if not isinstance(value, dict):
    raise _fail(where, "all_instructions", f"an object with {', '.join(INSTRUCTION_KEYS)}",
                value)
  for k in INSTRUCTION_KEYS:
    if not isinstance(value.get(k), str):
      raise _fail(where, f"all_instructions.{k}", "a string", value.get(k))
  return {k: value[k] for k in INSTRUCTION_KEYS}


def instruction_from_json(obj: Any, where: str) -> InstructionRecord | CoordinateInstruction:
  """One instruction record of either layout (``coordinate`` present: the centre layout)."""
  obj = _object(obj, where)
  ident = _string(obj, "id", where, nonempty=True)
  platform = _string(obj, "platform", where, nonempty=True)
  instruction = _string(obj, "instruction", where, nonempty=True)
  if "coordinate" in obj:
    xy = _numbers(obj, "coordinate", 2, where)
    return CoordinateInstruction(ident, (xy[0], xy[1]), platform, instruction,
                                 _string(obj, "text", where, optional=True),
                                 _category(obj, where))
  box = frames_lib.ordered_box(_numbers(obj, "bbox", 4, where), where)
  return InstructionRecord(ident, box, _string(obj, "text", where), _category(obj, where),
                           platform, _all_instructions(obj, where), instruction)


def load_instructions(path: str, dataset_root: str | None = None
                      ) -> list[InstructionRecord | CoordinateInstruction]:
  """Reads and validates an instruction-tuning file (a JSON list).

  Args:
    path: e.g. ``<root>/instruction_tuning/direct_text_instructions.json``.
    dataset_root: when given, each record's screenshot
      ``images/<platform>/<id>.png`` must exist and its box (or point) lie inside it.

  Raises:
    DataError: ``path[index]: field ...``.
  """
  rows = _read_json_list(path)
  sizes: dict[str, tuple[int, int]] = {}
  out = []
  for i, row in enumerate(rows):
    where = f"{path}[{i}]"
    rec = instruction_from_json(row, where)
    if dataset_root is not None:
      img = os.path.join(dataset_root, "images", rec.platform, rec.id + ".png")
      if img not in sizes:
        sizes[img] = image_size(img, where)
      w, h = sizes[img]
      if isinstance(rec, CoordinateInstruction):
        x, y = rec.coordinate
        if not (0 <= x <= w and 0 <= y <= h):
          raise DataError(f"{where}: field 'coordinate': {list(rec.coordinate)} lies outside "
                          f"its image of {w}x{h} pixels")
      else:
        _check_box_in(rec.bbox, (w, h), where)
    out.append(rec)
  return out


def write_instructions(path: str,
                       records: Iterable[InstructionRecord | CoordinateInstruction]) -> None:
  """One instruction-tuning file (a JSON list), atomically."""
  files.write_json(path, [r.to_json() for r in records])


def recover_box(coordinate: Sequence[float], annotations: Sequence[Annotation]
                ) -> tuple[float, float, float, float] | None:
  """The box of a centre-layout record (§2.2): among the elements whose box contains the
  point, the one whose centre is nearest to it (the first on ties); None if none does."""
  x, y = float(coordinate[0]), float(coordinate[1])
  best, best_d = None, None
  for a in annotations:
    x1, y1, x2, y2 = a.bbox
    if x1 <= x <= x2 and y1 <= y <= y2:
      d = ((x1 + x2) / 2 - x) ** 2 + ((y1 + y2) / 2 - y) ** 2
      if best_d is None or d < best_d:
        best, best_d = a.bbox, d
  return best


# -- SFT and RL rows ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SFTRecord:
  """A ShareGPT row: the instruction after the image, the call as the answer (resized frame)."""
  conversations: list[dict[str, str]]
  system: str
  images: list[str]
  tool: str
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def make(cls, instruction: str, point: Sequence[int], image: str, system: str,
           metadata: dict[str, Any] | None = None) -> "SFTRecord":
    """The row that teaches clicking ``point`` (resized frame) for ``instruction``."""
    call = {"name": answer.TOOL_NAME,
            "arguments": {"action": "left_click", "coordinate": [int(point[0]),
                                                                 int(point[1])]}}
    conv = [{"from": "human", "value": IMAGE_TOKEN + instruction},
            {"from": "function_call", "value": json.dumps(call)}]
    return cls(conv, system, [image], tool_json(), dict(metadata or {}))

  @property
  def instruction(self) -> str:
    return self.conversations[0]["value"][len(IMAGE_TOKEN):]

  @property
  def point(self) -> tuple[int, int]:
    """The target point (resized frame)."""
    return tuple(json.loads(self.conversations[1]["value"])["arguments"]["coordinate"])

  def target_text(self) -> str:
    """The completion a model is trained to write (:func:`answer.format_answer`)."""
    return answer.format_answer(*self.point)

  def to_json(self) -> dict[str, Any]:
    out = {"conversations": self.conversations, "system": self.system,
           "images": self.images, "tool": self.tool}
    if self.metadata:
      out["metadata"] = self.metadata
    return out

  @classmethod
  def from_json(cls, obj: Any, where: str) -> "SFTRecord":
    obj = _object(obj, where)
    conv = obj.get("conversations")
    if (not isinstance(conv, list) or len(conv) != 2
        or not all(isinstance(t, dict) for t in conv)):
      raise _fail(where, "conversations", "a list of 2 turns (human, function_call)", conv)
    for i, role in enumerate(("human", "function_call")):
      if conv[i].get("from") != role or not isinstance(conv[i].get("value"), str):
        raise _fail(where, f"conversations[{i}]", f"{{'from': {role!r}, 'value': str}}",
                    conv[i])
    if not conv[0]["value"].startswith(IMAGE_TOKEN):
      raise _fail(where, "conversations[0].value", f"text starting with {IMAGE_TOKEN!r}",
                  conv[0]["value"])
    point = answer.parse(f"{answer.OPEN}{conv[1]['value']}{answer.CLOSE}").point
    if point is None:
      raise _fail(where, "conversations[1].value",
                  "a computer_use call JSON with an integer [x, y] coordinate", conv[1]["value"])
    images = obj.get("images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
      raise _fail(where, "images", "a list with one image path", images)
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
      raise _fail(where, "metadata", "an object", meta)
    return cls(conv, _string(obj, "system", where), images, _string(obj, "tool", where), meta)


@dataclasses.dataclass(frozen=True)
class RLRecord:
  """An RL prompt: the box and image size in the resized frame (what the reward reads)."""
  system: str
  instruction: str
  images: list[str]
  gt_response: str
  gt_bbox: tuple[float, float, float, float]
  image_size: tuple[int, int]
  original_size: tuple[int, int]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict[str, Any]:
    out = {"system": self.system, "instruction": self.instruction, "images": self.images,
           "gt_response": self.gt_response, "gt_bbox": list(self.gt_bbox),
           "image_size": list(self.image_size), "original_size": list(self.original_size)}
    if self.metadata:
      out["metadata"] = self.metadata
    return out

  @classmethod
  def from_json(cls, obj: Any, where: str) -> "RLRecord":
    obj = _object(obj, where)
    images = obj.get("images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
      raise _fail(where, "images", "a list with one image path", images)
    size = _numbers(obj, "image_size", 2, where)
    orig = _numbers(obj, "original_size", 2, where)
    for field, wh in (("image_size", size), ("original_size", orig)):
      if not all(isinstance(v, int) and v > 0 for v in wh):
        raise _fail(where, field, "2 positive integers [W, H]", list(wh))
    box = _numbers(obj, "gt_bbox", 4, where)
    _check_box_in(box, size, where, "gt_bbox")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
      raise _fail(where, "metadata", "an object", meta)
    return cls(_string(obj, "system", where), _string(obj, "instruction", where, nonempty=True),
               images, _string(obj, "gt_response", where), box, (size[0], size[1]),
               (orig[0], orig[1]), meta)


TASK_NAME = "groundcua"


def task_row(record: RLRecord, seed: int, task: str = TASK_NAME) -> dict[str, Any]:
  """An RL record as a row of the LLM trainers' task files (:mod:`jaxlab.llm.tasks`).

  Fields: ``task``; ``question`` = the instruction; ``answer`` = the JSON of the target box
  ``[x1, y1, x2, y2]`` in the resized frame (what the ``groundcua`` verifier checks a
  predicted point against, so ``eval/accuracy`` is point-in-box accuracy); ``seed``; the
  image path in ``image``; and every RL field kept: ``gt_response`` (the target tool call,
  the SFT completion ``"{gt_response}"``), ``system`` (the system text with the resized
  size, a prompt field ``"{system}"``), ``gt_bbox`` and ``image_size``, which
  :func:`jaxlab.grounding.reward.groundcua_reward` reads.
  """
  row = record.to_json()
  row.update(task=task, question=record.instruction, answer=json.dumps(list(record.gt_bbox)),
             seed=int(seed), image=record.images[0])
  return row


def _check_image(root: str, rel: str, where: str, expected: tuple[int, int] | None,
                 image_config: processor.ImageProcessorConfig | None,
                 resized: tuple[int, int] | None) -> None:
  w, h = image_size(os.path.join(root, rel), where)
  if expected is not None and (w, h) != tuple(expected):
    raise DataError(f"{where}: field 'original_size': {list(expected)} but the screenshot "
                    f"{rel!r} is {w}x{h}")
  if image_config is not None and resized is not None:
    frame = frames_lib.frame_for(w, h, image_config)
    if frame.resized_size != tuple(resized):
      raise DataError(f"{where}: field 'image_size': {list(resized)} but the resize rule "
                      f"(min_pixels={image_config.min_pixels}, max_pixels="
                      f"{image_config.max_pixels}) gives {list(frame.resized_size)} for a "
                      f"{w}x{h} screenshot; the rows were written for another setting")


def load_sft(path: str, root: str | None = None, *, check_images: bool = True,
             image_config: processor.ImageProcessorConfig | None = None) -> list[SFTRecord]:
  """Reads and validates SFT rows (JSONL).

  Args:
    path: the JSONL file.
    root: image paths are relative to it (default: the file's directory).
    check_images: each screenshot must exist (and, with ``image_config``, the target point
      must lie inside the resized image).
    image_config: the processor settings the rows must have been written for.

  Raises:
    DataError: ``path:line: field ...``.
  """
  root = root or os.path.dirname(os.path.abspath(path))
  out = []
  for line, obj in _read_jsonl(path):
    where = f"{path}:{line}"
    rec = SFTRecord.from_json(obj, where)
    if check_images:
      w, h = image_size(os.path.join(root, rec.images[0]), where)
      if image_config is not None:
        rw, rh = frames_lib.frame_for(w, h, image_config).resized_size
        x, y = rec.point
        if not (0 <= x <= rw and 0 <= y <= rh):
          raise DataError(f"{where}: field 'conversations[1].value': point {[x, y]} lies "
                          f"outside the resized image of {rw}x{rh}")
    out.append(rec)
  return out


def load_rl(path: str, root: str | None = None, *, check_images: bool = True,
            image_config: processor.ImageProcessorConfig | None = None) -> list[RLRecord]:
  """Reads and validates RL rows (JSONL); arguments as :func:`load_sft`.

  With ``image_config``, ``image_size`` must be the resize rule's size of the screenshot.
  """
  root = root or os.path.dirname(os.path.abspath(path))
  out = []
  for line, obj in _read_jsonl(path):
    where = f"{path}:{line}"
    rec = RLRecord.from_json(obj, where)
    if check_images:
      _check_image(root, rec.images[0], where, rec.original_size, image_config, rec.image_size)
    out.append(rec)
  return out


def write_jsonl(path: str, records: Iterable[SFTRecord | RLRecord]) -> None:
  """SFT or RL rows, one JSON object per line, atomically."""
  files.write_jsonl(path, (r.to_json() for r in records))


# -- readers ----------------------------------------------------------------------------------


def _read_json_list(path: str) -> list[Any]:
  if not os.path.isfile(path):
    raise DataError(f"{path}: file does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      rows = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
  except UnicodeDecodeError:
    raise DataError(f"{path}: not UTF-8 text") from None
  if not isinstance(rows, list):
    raise DataError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
  return rows


def _read_jsonl(path: str) -> list[tuple[int, Any]]:
  if not os.path.isfile(path):
    raise DataError(f"{path}: file does not exist")
  out = []
  with open(path, encoding="utf-8") as f:
    for line, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        out.append((line, json.loads(text)))
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})") from None
  return out
