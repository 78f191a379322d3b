"""Task rows for the LLM trainers: where the files are, which rows a step reads, prompts as ids.

Rows come from task JSONL files (:mod:`jaxlab.llm.tasks`); every error names ``file:row``.
The rows of step ``s`` are a pure function of ``(seed, s)`` (consecutive slices of per-epoch
permutations), so a resumed run reads exactly the rows an uninterrupted one would, and the
batch does not depend on how many processes share it. :class:`RowStore` parses a row only when
a batch needs it, so each process of a multi-process job parses the rows of its own devices.

Rows for a vision-language model also name image files (:class:`RowImages`): a row field
holds one path or a list of paths, relative to the JSONL file's folder or absolute. Their
patch grids are known from the files' headers when the rows are read (the prompts' placeholder
counts and M-RoPE positions need them); the pixels are read and patched per batch and laid out
as a padded :class:`~jaxlab.models.qwen_vl.vision.ImageBatch` of a fixed patch budget, so every
batch has the same shapes.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxlab.core.errors import DataError
from jaxlab.llm import tasks as tasks_lib

# Rows of the image tasks validate once their verifiers are registered (importing does it).

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(path: str) -> str:
  """A data path as given if it exists, else relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join(_REPO, path)
  return candidate if os.path.exists(candidate) else path


def missing_file(key: str, path: str) -> str | None:
  """The config-check message for a data file ``config.<key>`` names that is not there (None
  when it exists). Data are generated, not shipped: the experiment's config docstring gives the
  command that makes its files (text tasks: ``python -m jaxlab.llm.tasks``; GUI screens:
  ``jaxlab.grounding.synthetic``; images: ``jaxlab.llm.image_tasks``; ...)."""
  if os.path.isfile(resolve_path(path)):
    return None
  return (f"'config.{key}': file {path!r} does not exist; the config file's docstring gives the "
          f"command that generates it (the text tasks: python -m jaxlab.llm.tasks --help)")


def load_rows(files: Sequence[str], limit: int = 0) -> list[tuple[str, int, dict[str, Any]]]:
  """``(file, row number, row)`` for the rows of ``files`` (at most ``limit`` per file; 0: all),
  every row parsed and validated now (:class:`RowStore` parses only the rows asked for).

  Raises:
    DataError: a file is missing or a row is malformed (``file:line`` and the field).
  """
  store = RowStore(files, limit)
  return store.rows(range(len(store)), cache=False)


class RowStore:
  """The rows of task JSONL files, each parsed (and validated) only when asked for.

  Building it reads the files once for where their rows start (byte offsets of the non-blank
  lines, no JSON parsing), so a process of a multi-process job can parse and tokenize only the
  rows that land on its own devices. Rows are numbered as :func:`load_rows` numbers them (files
  in order, blank lines skipped, at most ``limit`` per file); a parse names ``file:line`` and
  the bad field exactly as :func:`jaxlab.llm.tasks.load_jsonl` does. Lines end at ``\\n``
  (a lone ``\\r`` does not end one, as it would in text mode; JSON lines do not hold one).

  Args:
    files: task JSONL files (as in the config; relative ones are resolved by
      :func:`resolve_path`).
    limit: rows per file (0: all).
    cache_size: parsed rows kept (least recently used dropped first).

  Raises:
    DataError: a file is missing or has no rows.
  """

  def __init__(self, files: Sequence[str], limit: int = 0, cache_size: int = 4096):
    self.files = list(files)
    self.paths = [resolve_path(f) for f in self.files]
    file_of, offset, size, line_of, row_of = [], [], [], [], []
    for k, path in enumerate(self.paths):
      if not os.path.isfile(path):
        raise tasks_lib.TaskDataError(f"{path}: task file does not exist")
      n, pos = 0, 0
      with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
          text = line.strip()
          # bytes.strip() knows ASCII whitespace only; load_jsonl skips any blank line.
          if text and (text.isascii() or line.decode("utf-8", "replace").strip()):
            file_of.append(k)
            offset.append(pos)
            size.append(len(line))
            line_of.append(lineno)
            n += 1
            row_of.append(n)
            if limit and n >= limit:
              break
          pos += len(line)
      if not n:
        raise tasks_lib.TaskDataError(f"{path}: no rows")
    self._file = np.asarray(file_of, np.int32)
    self._offset = np.asarray(offset, np.int64)
    self._size = np.asarray(size, np.int64)
    self._line = np.asarray(line_of, np.int64)
    self._row = np.asarray(row_of, np.int64)
    self.cache_size = cache_size
    self._cache: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
    self.parsed = 0  # rows parsed so far (cache hits not counted): what tests check

  def __len__(self) -> int:
    return len(self._file)

  def where(self, i: int) -> tuple[str, int]:
    """``(file as given, row number)`` of row ``i``, as :func:`load_rows` names it."""
    return self.files[self._file[i]], int(self._row[i])

  def rows(self, index: Iterable[int], cache: bool = True
           ) -> list[tuple[str, int, dict[str, Any]]]:
    """``(file, row number, row)`` of rows ``index`` (in that order), parsed now unless cached;
    ``cache=False`` neither reads nor fills the cache (one pass over many rows)."""
    index = [int(i) for i in index]
    got: dict[int, dict[str, Any]] = {}
    if cache:
      for i in index:
        if i in self._cache:
          self._cache.move_to_end(i)
          got[i] = self._cache[i]
    todo = sorted(set(index) - set(got), key=lambda i: (self._file[i], self._offset[i]))
    handle, open_file = None, -1
    try:
      for i in todo:
        if self._file[i] != open_file:
          if handle is not None:
            handle.close()
          open_file = int(self._file[i])
          handle = open(self.paths[open_file], "rb")
        handle.seek(int(self._offset[i]))
        got[i] = self._parse(i, handle.read(int(self._size[i])))
        if cache:
          self._cache[i] = got[i]
          if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
    finally:
      if handle is not None:
        handle.close()
    return [(*self.where(i), got[i]) for i in index]

  def _parse(self, i: int, line: bytes) -> dict[str, Any]:
    where = f"{self.paths[self._file[i]]}:{self._line[i]}"
    self.parsed += 1
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise tasks_lib.TaskDataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})"
                                    ) from None
    except UnicodeDecodeError as e:
      raise tasks_lib.TaskDataError(f"{where}: not UTF-8 ({e.reason})") from None
    return tasks_lib.validate_row(row, where)


def process_share(num_rows: int) -> range:
  """This process's contiguous share of ``num_rows`` rows (all of them with one process): the
  rows it reads in a pass that every process splits (e.g. to check every row once)."""
  import jax  # pylint: disable=g-import-not-at-top
  n, k = jax.process_count(), jax.process_index()
  return range(num_rows * k // n, num_rows * (k + 1) // n)


# Set (to anything) to have every process of a trainer print the batch rows it built and how many
# rows it has parsed (the multi-process tests read it).
DEBUG_DATA = "JAXLAB_DEBUG_DATA"
SHARE_CHUNK = 1024  # rows parsed and rendered together in a pass over every row


def share_pass(store: RowStore, render: Callable[[tuple[str, int, dict]], Any],
               fn: Callable[[np.ndarray, list[str], list[Any]], None],
               chunk: int = SHARE_CHUNK) -> None:
  """Calls ``fn(index, where, items)`` on chunks of this process's share of ``store``'s rows
  (:func:`process_share`; every row of the job, each by one process, parsed once and
  dropped): ``index`` the row numbers, ``where`` their ``file:row``, ``items`` what
  ``render`` made of each ``(file, row number, row)`` (it raises ``DataError`` on a bad row).
  Then raises on every process the error of the job's first bad row (its ``file:row`` and
  field, as a one-process run would). A collective: every process calls it.
  """
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  share = process_share(len(store))
  bad = -1
  for start in range(share.start, share.stop, chunk):
    index = range(start, min(start + chunk, share.stop))
    try:
      located = store.rows(index, cache=False)
      items = [render(r) for r in located]
    except DataError:
      bad = next(i for i in index if _row_fails(store, render, i))
      break
    fn(np.asarray(index), [f"{f}:{line}" for f, line, _ in located], items)
  every = mesh_lib.allgather_host(np.int32(bad))
  if (every >= 0).any():  # the first in file order: the error a single process would give
    render(store.rows([int(every[every >= 0].min())], cache=False)[0])


def _row_fails(store: RowStore, render: Callable, i: int) -> bool:
  """Whether row ``i`` fails to parse, validate or render."""
  try:
    render(store.rows([i], cache=False)[0])
  except DataError:
    return True
  return False


def measure_rows(store: RowStore, render: Callable[[tuple[str, int, dict]], Any],
                 lengths: Callable[[np.ndarray, list[str], list[Any]], np.ndarray],
                 limit: int = 0) -> tuple[int, tuple[int, int] | None]:
  """``(longest, over)`` over every row of the job: :func:`share_pass` with ``lengths(index,
  where, items)`` giving each row's length; ``longest`` the largest (0 for no rows), ``over``
  ``(row, length)`` of the first row (in file order) longer than ``limit`` (None when there is
  none or ``limit`` is 0). Each process measures its share, the results are exchanged (a
  collective), so every process gets the same answer; a bad row raises as in
  :func:`share_pass`."""
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  longest, over = 0, (-1, 0)  # over: this process's first row longer than limit, its length

  def measure(index, where, items):
    nonlocal longest, over
    n = np.asarray(lengths(index, where, items))
    longest = max(longest, int(n.max()))
    if limit and over[0] < 0 and (n > limit).any():
      k = int(np.argmax(n > limit))
      over = (int(index[k]), int(n[k]))

  share_pass(store, render, measure)
  every = mesh_lib.allgather_host(np.asarray([longest, *over], np.int32))
  too_long = every[every[:, 1] >= 0]
  first = None
  if len(too_long):
    i, n = too_long[np.argmin(too_long[:, 1]), 1:]
    first = (int(i), int(n))
  return int(every[:, 0].max()), first


def batch_indices(step: int, batch_size: int, num_rows: int, seed: int) -> np.ndarray:
  """Row indices of the batch of ``step`` (0-based): consecutive slices of per-epoch
  permutations, a pure function of its arguments (so resuming replays the same data)."""
  start = step * batch_size
  idx = np.arange(start, start + batch_size)
  epochs, pos = idx // num_rows, idx % num_rows
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):
    perm = np.random.default_rng([seed, int(e)]).permutation(num_rows)
    sel = epochs == e
    out[sel] = perm[pos[sel]]
  return out


# -- images of vision-language rows ---------------------------------------------------------------


def image_paths(rows_with_where: Sequence[tuple[str, int, dict]], field: str) -> list[list[str]]:
  """Each row's image files: ``row[field]`` (a path or a list of paths; relative ones are taken
  from the JSONL file's folder), checked to exist.

  Raises:
    DataError: a missing field, a value that is not a path or a list of paths, or a file that
      does not exist; ``file:row`` and the field named.
  """
  out = []
  for f, line, row in rows_with_where:
    where = f"{f}:{line}"
    if field not in row:
      raise DataError(f"{where}: missing field {field!r} (the image file(s) of the row, "
                      "'config.data.image_field')")
    value = row[field]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
      raise DataError(f"{where}: field {field!r} must be an image path or a list of paths, "
                      f"got {value!r}")
    base = os.path.dirname(os.path.abspath(resolve_path(f)))
    paths = []
    for x in items:
      full = x if os.path.isabs(x) else os.path.join(base, x)
      if not os.path.isfile(full):
        raise DataError(f"{where}: field {field!r}: image file {x!r} not found (looked for "
                        f"{full})")
      paths.append(full)
    out.append(paths)
  return out


def image_grid(path: str, image_config: Any, where: str) -> tuple[int, int, int]:
  """``(1, rows, columns)`` patch grid the image processor gives the file, from its header (its
  size, turned by any EXIF orientation, through the resize rule); no pixels are decoded.

  Raises:
    DataError: an unreadable file or a size the resize rule rejects (``where`` named).
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import processor  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      width, height = im.size
      if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # a quarter turn: sides swap
        width, height = height, width
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise DataError(f"{where}: cannot read image {path} ({e})") from None
  ic = image_config
  if ic.do_resize:
    try:
      height, width = processor.smart_resize(height, width, ic.factor, ic.min_pixels,
                                             ic.max_pixels)
    except DataError as e:
      raise DataError(f"{where}: image {path}: {e}") from None
  elif height % ic.factor or width % ic.factor:
    raise DataError(f"{where}: image {path} is {height}x{width} with do_resize=false; expected "
                    f"multiples of {ic.factor}")
  return 1, height // ic.patch_size, width // ic.patch_size


def render_prompt(prompt_format: str, row: dict[str, Any], placeholder: str, num_images: int,
                  where: str) -> str:
  """The prompt text of an image row, one ``<|vision_start|><|image_pad|><|vision_end|>`` per
  image (not yet repeated per merged patch).

  ``placeholder`` names the format field that stands for one image (``"image"`` or
  ``"{image}"``: each ``{image}`` of ``prompt_format`` is the next image). A format without it
  gets the row's images before its text, as a chat user turn places them.

  Raises:
    DataError: the prompt holds a different number of image placeholders than the row has
      images (``where`` named).
  """
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=g-import-not-at-top
  name = placeholder.strip().strip("{}")
  fields = {**row, name: inputs.IMAGE_SPAN} if name else row
  text = prompt_format.format(**fields)
  n = inputs.count_placeholders(text)
  if n == 0 and num_images:
    return inputs.image_prompt(text, num_images)
  if n != num_images:
    raise DataError(f"{where}: the prompt holds {n} image placeholder(s) but the row has "
                    f"{num_images} image(s); expected one per image")
  return text


def image_prompts(located: Sequence[tuple[str, int, dict]], field: str, image_config: Any,
                  vision_config: Any, prompt_format: str, placeholder: str,
                  max_patches: int = 0, max_images: int = 0) -> tuple[list[str], "RowImages"]:
  """``(prompt texts, images)`` of ``(file, row number, row)`` triples: each text with its
  images' placeholders repeated once per merged patch, and their :class:`RowImages` (patch
  budget and image slots as given, 0 = these rows' own).

  Raises:
    DataError: as :class:`RowImages` and :meth:`RowImages.prompts` raise for a row.
  """
  images = RowImages(located, field, image_config, vision_config, max_patches,
                     max_images=max_images)
  return images.prompts(prompt_format, [r for _, _, r in located], placeholder), images


def image_row(located: tuple[str, int, dict], field: str, image_config: Any, vision_config: Any,
              prompt_format: str, placeholder: str, max_patches: int = 0
              ) -> tuple[str, int, int]:
  """One image row as a start-up pass measures it: ``(prompt text, patches, images)``, the
  text as :func:`image_prompts` gives it, the patches its images need (checked against
  ``max_patches`` when it is set) and how many images it has.

  Raises:
    DataError: as :func:`image_prompts` raises for the row.
  """
  (text,), images = image_prompts([located], field, image_config, vision_config, prompt_format,
                                  placeholder, max_patches)
  return text, int(images.grids[0].prod(-1).sum()), len(images.paths[0])


class ImageBudget:
  """The job's patch budget and image slots per row: the most any row of the job needs.

  A start-up pass calls :meth:`observe` with this process's rendered rows (items ending in
  ``(patches, images)``, as :func:`image_row` gives them), then every process calls
  :meth:`exchange` (a collective), so every batch of the run gets the same shapes.
  """

  def __init__(self):
    self._most = np.zeros(2, np.int32)

  def observe(self, items: Sequence[tuple]) -> None:
    for item in items:
      np.maximum(self._most, item[-2:], out=self._most)

  def exchange(self, max_patches: int = 0) -> tuple[int, int]:
    """``(patches, images)``: ``max_patches`` if set, else the most patches of any row; the
    most images of any row (at least 1)."""
    from jaxlab.core import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    patches, images = (int(x) for x in mesh_lib.allgather_host(self._most).max(axis=0))
    return max_patches or patches, max(images, 1)


def config_row_images(data_config: Any, rows_with_where: Sequence[tuple[str, int, dict]],
                      image_config: Any, vision_config: Any) -> "RowImages | None":
  """The images of rows as a run with ``config.data`` reads them (its image field and patch
  budget), or None for a run without images: what ``TaskAccuracy(images=...)`` scores with."""
  if not data_config.image_field:
    return None
  return RowImages(rows_with_where, data_config.image_field, image_config, vision_config,
                   data_config.max_patches)


class RowImages:
  """The images of task rows for a vision-language model, and their padded batches.

  Args:
    rows_with_where: ``(file, row number, row)`` from :func:`load_rows`.
    field: the row field with the image path(s).
    image_config: the model's :class:`~jaxlab.models.qwen_vl.processor.ImageProcessorConfig`.
    vision_config: the model's :class:`~jaxlab.models.qwen_vl.config.VisionConfig`.
    max_patches: the patch budget of one row (all its images); 0 = the largest row's.
    key: the config key named when a row exceeds ``max_patches``.
    max_images: image slots per row; 0 = the most any row has (at least 1). A batch of a
      few rows gives the job's values for both, so every batch has the same shapes.

  Raises:
    DataError: a bad image field or file (see :func:`image_paths`, :func:`image_grid`), or a
      row whose images need more than ``max_patches`` patches (``file:row`` named).
  """

  def __init__(self, rows_with_where: Sequence[tuple[str, int, dict]], field: str,
               image_config: Any, vision_config: Any, max_patches: int = 0,
               key: str = "config.data.max_patches", max_images: int = 0):
    self.where = [f"{f}:{line}" for f, line, _ in rows_with_where]
    self.paths = image_paths(rows_with_where, field)
    self.image_config, self.vision_config = image_config, vision_config
    self.grids = [np.asarray([image_grid(p, image_config, w) for p in ps], np.int64
                             ).reshape(-1, 3) for ps, w in zip(self.paths, self.where)]
    need = [int(g.prod(-1).sum()) for g in self.grids]
    if max_patches:
      unit = vision_config.merge_unit
      if max_patches % unit:
        raise DataError(f"'{key}'={max_patches} must be a multiple of spatial_merge_size**2 = "
                        f"{unit}")
      for w, n, g in zip(self.where, need, self.grids):
        if n > max_patches:
          raise DataError(f"{w}: its image(s) need {n} patches (grids {g.tolist()}), more "
                          f"than '{key}'={max_patches}; raise it or lower "
                          "'config.data.max_pixels'")
    self.max_patches = max_patches or max(need, default=0)
    self.max_images = max_images or max([len(p) for p in self.paths] + [1])

  def __len__(self) -> int:
    return len(self.paths)

  def prompts(self, prompt_format: str, rows: Sequence[dict[str, Any]], placeholder: str
              ) -> list[str]:
    """Prompt texts with each image's placeholder repeated once per merged patch (what the
    tokenizer reads)."""
    from jaxlab.models.qwen_vl import inputs, processor  # pylint: disable=g-import-not-at-top
    merge = self.vision_config.spatial_merge_size
    out = []
    for row, paths, grid, where in zip(rows, self.paths, self.grids, self.where):
      text = render_prompt(prompt_format, row, placeholder, len(paths), where)
      out.append(processor.expand_image_placeholders(inputs.wrap_placeholders(text), grid,
                                                     inputs.IMAGE_TOKEN, merge))
    return out

  def pack(self, index: Sequence[int]) -> Any:
    """The :class:`~jaxlab.models.qwen_vl.vision.ImageBatch` (numpy) of rows ``index``: files
    read and patched now, laid out in ``max_patches`` patches per row."""
    from jaxlab.models.qwen_vl import processor, vision  # pylint: disable=g-import-not-at-top
    index = [int(i) for i in index]
    images, wanted = [], []
    for i in index:
      for p in self.paths[i]:
        try:
          images.append(processor.load_image(p))
        except DataError as e:
          raise DataError(f"{self.where[i]}: {e}") from None
      wanted.append(self.grids[i])
    pixel_values = grid = None
    if images:
      pixel_values, grid = processor.preprocess(images, self.image_config)
      if not np.array_equal(grid, np.concatenate(wanted)):
        raise DataError(f"rows {[self.where[i] for i in index]}: image grids changed since the "
                        f"rows were read (expected {np.concatenate(wanted).tolist()}, got "
                        f"{grid.tolist()})")
    return vision.pack_images(self.vision_config, pixel_values, grid,
                              [len(self.paths[i]) for i in index], self.max_patches,
                              self.max_images)

  def inputs(self, index: Sequence[int]) -> dict[str, Any]:
    """The image keyword arguments of ``jaxlab.llm.sampling.generate`` for rows ``index``."""
    if not self.max_patches:
      return {}
    return {"pixel_values": self.pack(index)}
