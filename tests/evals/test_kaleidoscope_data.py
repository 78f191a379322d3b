"""Kaleidoscope data side: the committed offline fixture, row checks, image resolvers, prompts.

The fixture (``tests/evals/data/kaleidoscope``) is made by
``python -m jaxlab.evals.kaleidoscope_fixture --out=tests/evals/data/kaleidoscope --nosaved``;
the tests regenerate it into a temporary folder (with its save_to_disk copy) and compare.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import kaleidoscope as K
from jaxlab.evals import kaleidoscope_fixture as F

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "kaleidoscope")
PARQUET = os.path.join(FIXTURE, "parquet")
IMAGES = os.path.join(FIXTURE, "images")
ZIP = os.path.join(FIXTURE, "data.zip")

# Unicode blocks of the non-Latin scripts the fixture must contain.
SCRIPTS = {"Cyrillic": (0x400, 0x4FF), "Arabic": (0x600, 0x6FF), "Devanagari": (0x900, 0x97F),
           "Bengali": (0x980, 0x9FF), "Telugu": (0xC00, 0xC7F)}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
  return F.make(str(tmp_path_factory.mktemp("kfix")), seed=0, saved=True)


@pytest.fixture(scope="module")
def by_dir():
  return K.load(PARQUET, images=IMAGES)


@pytest.fixture(scope="module")
def by_zip():
  with K.load(PARQUET, images=ZIP) as ds:
    yield ds


def _rows():
  return pq.read_table(os.path.join(PARQUET, "train-00000-of-00001.parquet")).to_pylist()


def _write(tmp_path, rows, schema=None):
  path = os.path.join(str(tmp_path), "bad.parquet")
  pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
  return path


def listing(root):
  """Paths of the files under ``root``, relative to it, sorted."""
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root)
                for f in fs)


def _one_line_error(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg
  return msg


# --- the fixture ------------------------------------------------------------------------------

def test_fixture_counts(by_dir):
  items = by_dir.items
  assert len(items) == 360
  assert pq.read_schema(os.path.join(PARQUET, "train-00000-of-00001.parquet")).names == list(
      K.FIELDS) and len(K.FIELDS) == 18
  assert [it.index for it in items] == list(range(360))
  assert sorted({it.language for it in items}) == sorted(K.LANGUAGES)
  for lang in K.LANGUAGES:
    mine = [it for it in items if it.language == lang]
    assert len(mine) == 20
    assert sorted(it.answer for it in mine) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert all(it.num_options == 4 for it in mine)
  expected_mm = len(K.LANGUAGES) * len(F.IMAGE_ITEMS) + len(F.IMAGE_OPTION_ITEMS)
  assert sum(it.is_multimodal for it in items) == expected_mm == 200  # 55.6 %
  assert sum(bool(it.image) for it in items) == 198
  assert sum(it.image_options for it in items) == 2
  assert all(not it.image for it in items if it.image_options)
  assert sum(K.IMAGE_TOKEN in it.question for it in items) == len(K.LANGUAGES) * 2
  assert sum(it.parallel_question_id == "" for it in items) == len(K.LANGUAGES) * 4
  text = "".join(it.question for it in items)
  for name, (lo, hi) in SCRIPTS.items():
    assert any(lo <= ord(c) <= hi for c in text), name
  for it in items:
    if it.image:
      assert it.image == f"data/{it.source}/images/{it.image_png}"
    assert it.general_category_en == K.DOMAINS[it.category_en]
  assert {it.general_category_en for it in items} == set(K.DOMAINS.values())


def test_fixture_regenerates_identically(regenerated, by_dir):
  again = K.load(regenerated["parquet"])
  assert again.items == by_dir.items
  new_rows = pq.read_table(
      os.path.join(regenerated["parquet"], "train-00000-of-00001.parquet")).to_pylist()
  assert new_rows == _rows()
  assert listing(regenerated["images"]) == listing(IMAGES)
  from PIL import Image
  for rel in listing(IMAGES):
    a = np.asarray(Image.open(os.path.join(IMAGES, rel)))
    b = np.asarray(Image.open(os.path.join(regenerated["images"], rel)))
    np.testing.assert_array_equal(a, b)
  with zipfile.ZipFile(ZIP) as z1, zipfile.ZipFile(regenerated["zip"]) as z2:
    assert z1.namelist() == z2.namelist() == [K.ZIP_PREFIX + r for r in listing(IMAGES)]


def test_save_to_disk_folder_reads_the_same(regenerated, by_dir):
  saved = K.load(regenerated["saved"])
  assert saved.items == by_dir.items


def test_languages_and_limit(by_dir):
  some = K.load(PARQUET, languages=["ru", "es"], limit=3)
  assert [(it.language, it.index) for it in some.items] == [
      (it.language, it.index) for it in by_dir.items if it.language in ("es", "ru")
      and it.index % 20 < 3]
  with pytest.raises(ConfigError, match="'xx'"):
    K.load(PARQUET, languages=["xx"])


# --- images -----------------------------------------------------------------------------------

def test_both_resolvers_open_identical_pixels(by_dir, by_zip):
  by_dir.check_images()
  by_zip.check_images()
  opened = 0
  for a, b in zip(by_dir.items, by_zip.items):
    if a.image:
      from_dir = np.asarray(by_dir.open_image(a))
      np.testing.assert_array_equal(from_dir, np.asarray(by_zip.open_image(b)))
      assert from_dir.shape == (F.IMAGE_SIDE, F.IMAGE_SIDE, 3)
      # The question is genuine: the picture has as many colour squares as the right option.
      assert len(np.unique(from_dir.reshape(-1, 3), axis=0)) == int(a.options[a.answer])
      opened += 1
    if a.image_options:
      counts = []
      for k in range(a.num_options):
        ia = np.asarray(by_dir.open_option_image(a, k))
        np.testing.assert_array_equal(ia, np.asarray(by_zip.open_option_image(b, k)))
        counts.append(len(np.unique(ia.reshape(-1, 3), axis=0)))
        opened += 1
      assert int(np.argmax(counts)) == a.answer
  assert opened == 198 + 8


def test_extracted_zip_root_and_prompt_images(tmp_path, by_dir):
  with zipfile.ZipFile(ZIP) as z:
    z.extractall(tmp_path)  # -> tmp_path/final_data/data/...
  ds = K.load(PARQUET, images=str(tmp_path), languages=["en"])
  ds.check_images()
  item = next(it for it in ds.items if it.image)
  ref = next(it for it in by_dir.items if it.index == item.index)
  np.testing.assert_array_equal(np.asarray(ds.open_image(item)),
                                np.asarray(by_dir.open_image(ref)))
  prompt = K.build_prompt(item, "direct", image_size=(32, 16))
  (image,) = ds.prompt_images(item, prompt)
  assert image.size == (32, 16)


def test_missing_image_named_with_row_and_path(tmp_path, by_dir):
  item = next(it for it in by_dir.items if it.image and it.language == "hi")
  shutil.copytree(IMAGES, tmp_path / "images")
  os.remove(tmp_path / "images" / item.image)
  ds = K.load(PARQUET, images=str(tmp_path / "images"))
  with pytest.raises(DataError) as e:
    ds.open_image(ds.items[item.index])
  msg = _one_line_error(e)
  assert f"row {item.index}:" in msg and item.image in msg
  with pytest.raises(DataError) as e:
    ds.check_images()
  msg = _one_line_error(e)
  assert f"row {item.index}:" in msg and item.image in msg and "1 missing" in msg
  # The zip resolver: a zip without that member.
  with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(tmp_path / "d.zip", "w") as dst:
    for name in src.namelist():
      if not name.endswith(item.image):
        dst.writestr(name, src.read(name))
  with K.load(PARQUET, images=str(tmp_path / "d.zip")) as zds:
    with pytest.raises(DataError) as e:
      zds.open_image(zds.items[item.index])
  assert _one_line_error(e) == (f"{PARQUET} row {item.index}: image '{item.image}' not found "
                                f"in {tmp_path / 'd.zip'}")
  with pytest.raises(DataError, match="closed"):
    zds.open_image(zds.items[item.index])
  opt = next(it for it in by_dir.items if it.image_options)
  with pytest.raises(DataError, match=f"row {opt.index}: .*no image folder or zip"):
    K.load(PARQUET).open_option_image(by_dir.items[opt.index], 2)


# --- bad rows ---------------------------------------------------------------------------------

def test_missing_field(tmp_path):
  rows = [{k: v for k, v in r.items() if k != "image_type"} for r in _rows()]
  with pytest.raises(DataError) as e:
    K.load(_write(tmp_path, rows))
  assert "row 0: field 'image_type': expected str, got no such field" in _one_line_error(e)


def test_null_required_value(tmp_path):
  rows = _rows()
  rows[7]["question"] = None
  with pytest.raises(DataError) as e:
    K.load(_write(tmp_path, rows))
  assert "row 7: field 'question': expected str, got null" in _one_line_error(e)


def test_answer_out_of_range(tmp_path):
  rows = _rows()
  rows[123]["answer"] = 4
  with pytest.raises(DataError) as e:
    K.load(_write(tmp_path, rows))
  msg = _one_line_error(e)
  assert "row 123: field 'answer': expected an option index in 0..3 (4 options), got 4" in msg
  assert msg.startswith(tmp_path.as_posix())


def test_unknown_language(tmp_path):
  rows = _rows()
  rows[45]["language"] = "xx"
  with pytest.raises(DataError) as e:
    K.load(_write(tmp_path, rows))
  assert "row 45: field 'language': expected one of ar bn" in _one_line_error(e)
  assert "got 'xx'" in str(e.value)


def test_wrong_type(tmp_path):
  rows = _rows()
  for r in rows:
    r["answer"] = str(r["answer"])  # a string column where the release has int64
  with pytest.raises(DataError) as e:
    K.load(_write(tmp_path, rows))
  assert "row 0: field 'answer': expected int, got str '0'" in _one_line_error(e)
  row = dict(_rows()[77], options="A, B, C")
  with pytest.raises(DataError) as e:
    K.item_from_row(row, 77, where="x.parquet")
  assert _one_line_error(e).startswith(
      "x.parquet row 77: field 'options': expected a list of strings, got str")


def test_unreadable_inputs(tmp_path):
  with pytest.raises(DataError, match="no such file"):
    K.load(str(tmp_path / "nothing"))
  with pytest.raises(DataError, match="no \\*.parquet"):
    K.load(str(tmp_path))
  (tmp_path / "x.txt").write_text("not a zip")
  with pytest.raises(DataError, match="not a zip"):
    K.load(PARQUET, images=str(tmp_path / "x.txt"))


# --- keys and groups --------------------------------------------------------------------------

def test_key_stable_distinct_and_repeats(tmp_path, by_dir):
  keys = [it.key for it in by_dir.items]
  assert len(set(keys)) == 360
  it = by_dir.items[17]
  joined = "\x1f".join([it.question, it.file_name, it.image_png, it.source,
                        it.original_question_num])
  assert it.key == hashlib.sha256(joined.encode()).hexdigest()[:20]
  # Changing a field outside the reference's key leaves the key alone; a key field changes it.
  assert dataclasses.replace(it, level="other").key == it.key
  assert dataclasses.replace(it, source="other").key != it.key
  rows = _rows()[:3] + [_rows()[1]]
  ds = K.load(_write(tmp_path, rows))
  assert [d.key for d in ds.items] == keys[:3] + [keys[1] + "~1"]


def test_groups(by_dir):
  for it in by_dir.items:
    g = it.groups()
    assert set(g) == {"language", "modality", "domain", "subject", "image_type", "script",
                      "resource"}
    assert all(g.values())
    assert g["modality"] == ("multimodal" if it.is_multimodal else "text-only")
    assert (g["image_type"] == "none") == (not it.is_multimodal)
  sr = next(it for it in by_dir.items if it.language == "sr").groups()
  uk = next(it for it in by_dir.items if it.language == "uk").groups()
  assert (sr["script"], sr["resource"], uk["script"], uk["resource"]) == (
      "non-Latin", "High", "non-Latin", "Mid/Low")
  assert sum(v == "Latin" for v in K.SCRIPT.values()) == 9
  assert sum(v == "Mid/Low" for v in K.RESOURCE.values()) == 5
  odd = dataclasses.replace(by_dir.items[0], general_category_en="", category_en="Astrology")
  assert odd.groups()["domain"] == "Other"
  assert set(K.KEYWORDS) == set(K.LANGUAGES) == set(K.DEFAULT_TEXTS.cot_system)


# --- prompts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lang,keywords", [
    ("es", ("Pregunta", "Opciones", "Respuesta")), ("ru", ("Вопрос", "Варианты", "Ответ")),
    ("ar", ("السؤال", "الخيارات", "الإجابة")), ("hi", ("प्रश्न", "विकल्प", "उत्तर"))])
def test_prompt_keywords_in_language(by_dir, lang, keywords):
  item = next(it for it in by_dir.items if it.language == lang and not it.is_multimodal)
  p = K.build_prompt(item, "direct")
  system, user = p.messages[0]["content"], p.messages[1]["content"]
  assert [m["role"] for m in p.messages] == ["system", "user"]
  assert '{"choice": "X"}' in system and "JSON" in system
  q, o, a = keywords
  assert user.split("\n") == [K.DEFAULT_TEXTS.direct_instruction, f"{q}: {item.question}",
                              f"{o}:"] + [f"{'ABCD'[k]}. {item.options[k]}" for k in range(4)] + [
                                  f"{a}:"]
  assert (p.num_options, p.language, p.images) == (4, lang, ())
  c = K.build_prompt(item, "cot")
  cot_system = c.messages[0]["content"]
  assert cot_system == K.DEFAULT_TEXTS.cot_system[lang] != K.DEFAULT_TEXTS.cot_system["en"]
  assert "<ANSWER> X </ANSWER>" in cot_system
  assert c.messages[1]["content"].split("\n") == [item.question, "Options:"] + [
      f"{'ABCD'[k]}. {item.options[k]}" for k in range(4)]
  if lang == "es":
    assert "paso a paso" in cot_system
  else:
    lo, hi = SCRIPTS[{"ru": "Cyrillic", "ar": "Arabic", "hi": "Devanagari"}[lang]]
    assert sum(lo <= ord(ch) <= hi for ch in cot_system) > 20


@pytest.mark.parametrize("regime", K.REGIMES)
def test_one_placeholder_per_attached_image(by_dir, regime):
  for it in by_dir.items:
    p = K.build_prompt(it, regime)
    user = p.messages[1]["content"]
    assert user.count(K.IMAGE_TOKEN) == len(p.images)
    assert K.IMAGE_TOKEN not in p.messages[0]["content"]
    if it.image_options:
      assert p.images == tuple(("option", k) for k in range(4))
      assert all(f"{'ABCD'[k]}. [image] {K.IMAGE_TOKEN}" in user for k in range(4))
    elif it.image:
      assert p.images == (("question", -1),)
      if K.IMAGE_TOKEN in it.question:  # the question's own marker is where the image goes
        assert it.question in user and not user.startswith(K.IMAGE_TOKEN + "\n")
      else:
        assert user.startswith(K.IMAGE_TOKEN + "\n")
    else:
      assert p.images == ()


def test_surplus_markers_dropped(by_dir):
  item = next(it for it in by_dir.items if it.image and it.language == "fa")
  two = dataclasses.replace(item, question=f"{K.IMAGE_TOKEN} a {K.IMAGE_TOKEN} b")
  user = K.build_prompt(two, "cot").messages[1]["content"]
  assert user.startswith(f"{K.IMAGE_TOKEN} a  b\n")
  text_only = dataclasses.replace(two, image=None, image_png="")
  assert K.IMAGE_TOKEN not in K.build_prompt(text_only, "direct").messages[1]["content"]


def test_regime_and_texts_errors(tmp_path, by_dir):
  with pytest.raises(ConfigError, match="direct, cot"):
    K.build_prompt(by_dir.items[0], "fewshot")
  path = tmp_path / "texts.json"
  path.write_text(json.dumps({"direct_system": "S", "cot_system": {"es": "Piensa."}}))
  texts = K.PromptTexts.from_file(str(path))
  assert texts.direct_system == "S" and texts.cot_system["es"] == "Piensa."
  assert texts.cot_system["ru"] == K.DEFAULT_TEXTS.cot_system["ru"]
  assert K.DEFAULT_TEXTS.cot_system["es"] != "Piensa."  # the default is not mutated
  es = next(it for it in by_dir.items if it.language == "es")
  assert K.build_prompt(es, "cot", texts).messages[0]["content"] == "Piensa."
  path.write_text(json.dumps({"direct_sytem": "S"}))
  with pytest.raises(ConfigError, match="unknown key 'direct_sytem'"):
    K.PromptTexts.from_file(str(path))
  path.write_text(json.dumps({"cot_system": {"xx": "?"}}))
  with pytest.raises(ConfigError, match="'cot_system.xx'"):
    K.PromptTexts.from_file(str(path))


def test_render_with_char_tokenizer_chat_template(by_dir):
  from jaxlab.models.tokenizer import train_char_tokenizer
  item = next(it for it in by_dir.items if it.image and it.language == "bn")
  p = K.build_prompt(item, "direct")
  system, user = p.messages[0]["content"], p.messages[1]["content"]
  tok = train_char_tokenizer([system, user])
  assert K.render(p, tok) == f"<|system|>{system}<eos><|user|>{user}<eos><|assistant|>"
  plain = train_char_tokenizer([system, user], chat_template=None)
  assert K.render(p, plain) == K.render(p, None) == f"{system}\n\n{user}\n"


def test_rules_read_oracle_answers(by_dir):
  from jaxlab.evals import mcq
  assert K.rules("direct") is K.RULES["direct"] is mcq.DIRECT_RULES
  assert K.rules("cot") is mcq.COT_RULES
  with pytest.raises(ConfigError, match="direct, cot"):
    K.rules("json")
  for it in by_dir.items[::7]:
    letter = K.LETTERS[it.answer]
    for regime, output in (("direct", f'{{"choice": "{letter}"}}'),
                           ("cot", f"... <ANSWER> {letter} </ANSWER>")):
      p = K.build_prompt(it, regime)
      got = mcq.extract(output, K.rules(regime), mcq.Context(p.num_options, p.language))
      assert got.choice == it.answer
