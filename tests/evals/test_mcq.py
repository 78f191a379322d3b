"""Multiple-choice extraction, metrics and results files (spec §3.3, mock models of §3.6).

Every expected number is worked out by hand from the outcomes chosen for the mock items and
written as a fraction; no number here was measured from the code.
"""

import json
import os
import re

import numpy as np
import pytest

from jaxlab.core import files
from jaxlab.core import stats
from jaxlab.core.errors import DataError
from jaxlab.evals import mcq

B = 40  # bootstrap resamples: enough to exercise the intervals, cheap enough to stay fast


def ctx(language="en", num_options=4):
  return mcq.Context(num_options, language)


def direct(text, language="en", num_options=4):
  return mcq.extract(text, mcq.DIRECT_RULES, ctx(language, num_options))


def cot(text, language="en", num_options=4):
  return mcq.extract(text, mcq.COT_RULES, ctx(language, num_options))


def rule(r, text, language="en", num_options=4):
  """The Latin letter one rule alone extracts (None: the rule finds no valid option)."""
  e = mcq.extract(text, [r], ctx(language, num_options))
  return e.letter if e.choice is not None else None


# ---------------------------------------------------------------------------------------------
# Look-alike letters


@pytest.mark.parametrize("raw, language, letter", [
    ("B", "en", "B"), (" b ", "en", "B"), ("(C).", "en", "C"), ("**D**", "en", "D"),
    ("Ｃ", "en", "C"), ("Ⓑ", "en", "B"), ("J", "en", "J"),
    # Cyrillic: by position А Б В Г Д -> A B C D E for Cyrillic-script languages ...
    ("А", "ru", "A"), ("Б", "ru", "B"), ("В", "ru", "C"), ("Г", "uk", "D"), ("Д", "sr", "E"),
    ("в", "uk", "C"), ("б", "ru", "B"),
    # ... Cyrillic В is the Latin B it looks like elsewhere; other homoglyphs never conflict.
    ("В", "en", "B"), ("В", "", "B"), ("С", "ru", "C"), ("С", "en", "C"), ("Е", "ru", "E"),
    ("Ц", "sr", "C"), ("Β", "en", "B"),  # Greek Beta
    # Arabic script, abjad order; Persian "alef" spelled out; tatweel dropped.
    ("أ", "ar", "A"), ("ا", "ar", "A"), ("ب", "ar", "B"), ("ج", "fa", "C"), ("د", "fa", "D"),
    ("الف", "fa", "A"), ("هـ", "ar", "E"),
    # Devanagari and Bengali: position, sound-alikes, English letter names.
    ("क", "hi", "A"), ("ख", "ne", "B"), ("ग", "hi", "C"), ("घ", "hi", "D"), ("स", "hi", "C"),
    ("बी", "hi", "B"), ("द", "hi", "D"),
    ("ক", "bn", "A"), ("খ", "bn", "B"), ("গ", "bn", "C"), ("ঘ", "bn", "D"), ("বি", "bn", "B"),
    # Telugu: the reference's sound-alikes and letter names only.
    ("బ", "te", "B"), ("సి", "te", "C"),
    # Not a letter.
    ("AB", "en", None), ("", "en", None), ("Paris", "en", None), ("K", "en", None),
    ("ఆ", "te", None), ("Ж", "ru", None),
])
def test_normalise_letter(raw, language, letter):
  assert mcq.normalise_letter(raw, language) == letter


def test_normalise_letter_non_string_is_none():
  assert mcq.normalise_letter(None) is None


def test_context_checks_num_options():
  with pytest.raises(DataError, match="num_options=0"):
    mcq.Context(0)
  with pytest.raises(DataError, match="num_options=11"):
    mcq.Context(11, "en")


def test_out_of_range_letter_is_a_format_error_that_records_the_letter():
  assert direct("E") == mcq.Extraction(None, None, "E")
  assert direct("E", num_options=5) == mcq.Extraction(4, "single_letter", "E")
  # Д is the 5th Cyrillic option: invalid on a 4-option item (the reference reads D).
  assert direct("Д", "ru") == mcq.Extraction(None, None, "E")
  assert direct("nothing useful") == mcq.Extraction(None, None, None)


# ---------------------------------------------------------------------------------------------
# Rules, one by one, on real-looking outputs in several scripts


def test_single_letter():
  r = mcq.SINGLE_LETTER
  assert [rule(r, t, lang) for t, lang in [
      ("B", "en"), (" c\n", "fr"), ("Б", "ru"), ("ج", "ar"), ("ख", "hi"), ("গ", "bn"),
      ("(D)", "de"), ("B.", "es")]] == ["B", "C", "B", "C", "B", "C", "D", "B"]
  assert rule(r, "Bonjour", "fr") is None
  assert rule(r, "A. B") is None
  # A chat transcript: only the text after the last "assistant\n" is the answer.
  transcript = "system\nAnswer in JSON.\nuser\nQuestion\nA. x\nB. y\nassistant\nC"
  assert direct(transcript) == mcq.Extraction(2, "single_letter", "C")


def test_json_choice():
  r = mcq.JSON_CHOICE
  cases = [
      ('{"choice": "B"}', "en", "B"),
      ('{"choice": " b "}', "en", "B"),
      ('{"choice": "B."}', "es", "B"),
      ('```json\n{"choice": "Г"}\n```', "ru", "D"),
      ('{"choice": "د"}', "ar", "D"),
      ('{"choice": "घ"}', "hi", "D"),
      ('{"choice": "ক"}', "bn", "A"),
      ("{'choice': 'A'}", "pt", "A"),  # Python-style quotes
      ('{"choice": "B. E"}', "en", "B"),  # E is no option of a 4-option item: one valid part
      ('First {"choice": "A"}, on reflection {"choice": "C"}', "en", "C"),  # the last one
  ]
  assert [rule(r, t, lang) for t, lang, _ in cases] == [want for _, _, want in cases]
  for bad in ['{"choice": "B. C"}', '{"choice": "A. B"}', '{"choice": null}', '{"choice": 2}',
              '{"answer": "B"}', '{"choice": "X"}']:
    assert rule(r, bad) is None, bad


def test_json_choice_multiline_with_extra_keys():
  out = ('```json\n{\n  "reasoning": "Der Flächeninhalt ist 12.",\n  "choice": "C",\n'
         '  "confidence": 0.9\n}\n```')
  assert direct(out, "de") == mcq.Extraction(2, "json_choice", "C")
  # The reference's regex reads only a one-line object whose first key is "choice".
  assert re.search(r'\{\s*"choice":\s*.*?\s*\}', out) is None


def test_leading_letter():
  r = mcq.LEADING_LETTER
  assert [rule(r, t, lang) for t, lang in [
      ("B. Paris", "fr"), ("C) 42", "en"), ("Б. Москва", "ru"), ("ب. القاهرة", "ar"),
      ("(D) none of these", "en")]] == ["B", "C", "B", "B", "D"]
  for two in ["A. B", "A) B)", "A. B. C", "(B) and (C)", "B. C or D", "B. C D",
              "A. Paris B. London", "B. Vitamin C"]:
    assert direct(two).choice is None, two
  assert direct("B. the answer is in section E").choice == 1  # E is no option of 4
  assert direct("(D) none of these").choice == 3


def test_answer_tags():
  r = mcq.ANSWER_TAGS
  assert rule(r, "I will answer as <ANSWER> X </ANSWER>.\nReasoning...\n<ANSWER> C </ANSWER>") \
      == "C"
  assert rule(r, "<ANSWER> A </ANSWER> wait, no: <ANSWER>D</ANSWER>") == "D"  # the last one
  assert rule(r, "Отже, <ANSWER> В </ANSWER>", "ru") == "C"
  assert rule(r, "لذلك <ANSWER> ب </ANSWER>", "ar") == "B"
  assert rule(r, "इसलिए <ANSWER> ग </ANSWER>", "hi") == "C"
  assert rule(r, "অতএব <ANSWER>ঘ</ANSWER>", "bn") == "D"
  assert rule(r, "<answer> b </answer>") == "B"
  assert rule(r, "<ANSWER> X </ANSWER>") is None


def test_correct_answer_is():
  r = mcq.CORRECT_ANSWER_IS
  assert rule(r, "Comparing the areas, the correct answer is C.") == "C"
  assert rule(r, "Answer: B") == "B"
  assert rule(r, "The final answer is (D).") == "D"
  assert rule(r, "First I thought the answer is A, but the correct answer is D.") == "D"
  assert rule(r, "The correct answer is Б.", "ru") == "B"
  assert rule(r, "The answer is a prime number.") is None  # lower-case article, not option a


@pytest.mark.parametrize("text, language, letter", [
    ("Por lo tanto, la respuesta correcta es C.", "es", "C"),
    ("Donc, la bonne réponse est (A).", "fr", "A"),
    ("Réponse : D", "fr", "D"),
    ("Somit ist die richtige Antwort B.", "de", "B"),
    ("Logo, a resposta correta é D.", "pt", "D"),
    ("Ответ: Б", "ru", "B"),
    ("Правильный ответ — В.", "ru", "C"),
    ("Отже, правильна відповідь: Г.", "uk", "D"),
    ("إذن الإجابة الصحيحة هي ج", "ar", "C"),
    ("अतः सही उत्तर (ख) है।", "hi", "B"),
    ("সুতরাং সঠিক উত্তর: গ", "bn", "C"),
    ("پاسخ صحیح گزینه ب است.", "fa", "B"),
    ("Dakle, točan odgovor je A.", "hr", "A"),
    ("Ответ в том, что скорость растёт.", "ru", None),  # lower-case в is "in", not option B/C
])
def test_answer_phrase(text, language, letter):
  assert rule(mcq.ANSWER_PHRASE, text, language) == letter


def test_answer_phrase_of_an_unknown_language_tries_all_phrases():
  assert rule(mcq.ANSWER_PHRASE, "Respuesta: B", "") == "B"
  assert rule(mcq.ANSWER_PHRASE, "Respuesta: B", "en") is None  # English: correct_answer_is


def test_bold_boxed_paren_and_letter_dot():
  assert rule(mcq.BOLD_LETTER, "So the option is **C**.") == "C"
  assert rule(mcq.BOLD_LETTER, "**B. Paris** is the capital.") == "B"
  assert rule(mcq.BOLD_LETTER, "Значит, **Б**", "ru") == "B"
  assert rule(mcq.BOLD_LETTER, "الجواب **ج**", "ar") == "C"
  assert rule(mcq.BOXED, r"$\boxed{C}$") == "C"
  assert rule(mcq.BOXED, r"$\boxed{\text{b}}$") == "B"
  assert rule(mcq.BOXED, r"\boxed{ख}", "hi") == "B"
  assert rule(mcq.PAREN_LETTER, "Not (A), not (B); it must be (C).") == "C"
  assert rule(mcq.PAREN_LETTER, "вариант (Г)", "uk") == "D"
  assert rule(mcq.PAREN_LETTER, "विकल्प (ख) सही है", "hi") == "B"
  assert rule(mcq.PAREN_LETTER, "বিকল্প (গ)", "bn") == "C"
  assert rule(mcq.PAREN_LETTER, "(A) fits; (E) is not an option") == "A"  # last VALID one
  assert rule(mcq.LETTER_DOT, "Checking each:\nA. too small\nC. matches") == "C"
  assert rule(mcq.LETTER_DOT, "Проверим:\nБ. подходит", "ru") == "B"
  assert rule(mcq.LETTER_DOT, "विश्लेषण:\nग. सही", "hi") == "C"
  assert rule(mcq.LETTER_DOT, "the value is 3.5 kg.") is None


def test_cot_rule_order():
  # The tags win over an earlier phrase; the phrase over a bold letter; fallbacks in order.
  assert cot("The correct answer is A... rechecking. <ANSWER> B </ANSWER>") == \
      mcq.Extraction(1, "answer_tags", "B")
  assert cot("**A** is tempting, but the correct answer is D.") == \
      mcq.Extraction(3, "correct_answer_is", "D")
  assert cot("Respuesta: B. Aunque **A** parecía correcta.", "es") == \
      mcq.Extraction(1, "answer_phrase", "B")
  assert cot("I cannot decide.") == mcq.Extraction(None, None, None)
  assert cot("C") == mcq.Extraction(2, "single_letter", "C")


# ---------------------------------------------------------------------------------------------
# Mock models (spec §3.6): per-language and aggregate metrics against hand-computed values


def scored(rows, rules, extra_groups=None):
  """Scored items of ``(language, answer, output)`` rows."""
  items = []
  for i, (lang, answer, out) in enumerate(rows):
    e = mcq.extract(out, rules, ctx(lang))
    groups = {"language": lang, **(extra_groups(i) if extra_groups else {})}
    items.append(mcq.Scored(f"{lang}-{i}", answer, e.choice, groups))
  return items


def check(items, expected, macro=None, micro=None):
  """expected: language -> (total, valid, format error); macro/micro: the three aggregates."""
  table = mcq.group_metrics(items, "language", num_bootstrap=B)
  assert sorted(table) == sorted(expected)
  for lang, (total, valid, fmt) in expected.items():
    got = table[lang]
    assert got["total_accuracy"] == pytest.approx(total), lang
    assert (got["valid_accuracy"] is None) == (valid is None), lang
    if valid is not None:
      assert got["valid_accuracy"] == pytest.approx(valid), lang
    assert got["format_error_rate"] == pytest.approx(fmt), lang
  s = mcq.summary(items, num_bootstrap=B)
  for agg, want in (("macro", macro), ("micro", micro)):
    if want is None:
      continue
    suffix = "macro_language" if agg == "macro" else "micro"
    for m, w in zip(mcq.METRICS, want):
      assert s[agg][f"{m}_{suffix}"] == pytest.approx(w), (agg, m)
  return table, s


LETTER = "ABCD"


def test_mock_a_oracle_json_answerer():
  rows = [(lang, a, json.dumps({"choice": LETTER[a]}))
          for lang in ("es", "ru", "ar") for a in range(4)]
  table, s = check(scored(rows, mcq.DIRECT_RULES),
                   {lang: (1, 1, 0) for lang in ("es", "ru", "ar")},
                   macro=(1, 1, 0), micro=(1, 1, 0))
  # All items alike: every interval collapses to the point.
  assert table["es"]["total_accuracy_ci"] == [1, 1]
  assert table["es"]["format_error_rate_ci"] == [0, 0]
  assert s["macro"]["total_accuracy_macro_language_ci"] == [1, 1]
  assert s["micro"]["format_error_rate_micro_ci"] == [0, 0]
  assert (s["n"], s["num_groups"]) == (12, 3)


def cot_output(lang, letter):
  prose = {"es": "Analicemos cada opción con cuidado antes de decidir.",
           "ru": "Рассмотрим каждый вариант по очереди и сравним их.",
           "ar": "لنحلل كل خيار بعناية قبل أن نقرر."}[lang]
  return f"{prose}\n\n<ANSWER> {letter} </ANSWER>"


GARBAGE = {"es": "No estoy seguro.", "ru": "Не могу определить.", "ar": "لا أعرف."}
RU_LETTERS = "АБВГ"  # what a model writing Russian option letters emits, by position
AR_LETTERS = "أبجد"


def test_mock_b_cot_answerer_with_scripts_and_garbage():
  # es: right, right, wrong, right; ru (Cyrillic letters): right, right, wrong, garbage;
  # ar (Arabic letters): right, wrong, garbage, garbage.
  rows = []
  for a, outcome in enumerate("RRWR"):
    rows.append(("es", a, cot_output("es", LETTER[a if outcome == "R" else (a + 1) % 4])))
  for a, outcome in enumerate("RRWG"):
    out = (GARBAGE["ru"] if outcome == "G"
           else cot_output("ru", RU_LETTERS[a if outcome == "R" else (a + 1) % 4]))
    rows.append(("ru", a, out))
  for a, outcome in enumerate("RWGG"):
    out = (GARBAGE["ar"] if outcome == "G"
           else cot_output("ar", AR_LETTERS[a if outcome == "R" else (a + 1) % 4]))
    rows.append(("ar", a, out))
  items = scored(rows, mcq.COT_RULES)
  check(items,
        {"es": (3 / 4, 3 / 4, 0), "ru": (2 / 4, 2 / 3, 1 / 4), "ar": (1 / 4, 1 / 2, 2 / 4)},
        macro=((3 / 4 + 2 / 4 + 1 / 4) / 3, (3 / 4 + 2 / 3 + 1 / 2) / 3, (0 + 1 / 4 + 2 / 4) / 3),
        micro=(6 / 12, 6 / 9, 3 / 12))


def test_mock_c_non_latin_letters_in_direct_answers():
  rows = [("ru", 0, "А"), ("ru", 1, '{"choice": "Б"}'), ("ru", 2, "В"), ("ru", 3, "Д"),
          ("ar", 0, "أ"), ("ar", 1, "ب"), ("ar", 2, '{"choice": "ج"}'), ("ar", 3, "د"),
          # English items: Cyrillic В and С are the Latin letters they look like.
          ("en", 1, "В"), ("en", 2, "С"), ("en", 0, "Ａ"), ("en", 0, "D")]
  check(scored(rows, mcq.DIRECT_RULES),
        {"ru": (3 / 4, 3 / 3, 1 / 4), "ar": (1, 1, 0), "en": (3 / 4, 3 / 4, 0)},
        macro=((3 / 4 + 1 + 3 / 4) / 3, (1 + 1 + 3 / 4) / 3, (1 / 4 + 0 + 0) / 3),
        micro=(10 / 12, 10 / 11, 1 / 12))


def test_mock_d_multi_letter_outputs():
  rows = [("es", 1, "A. B"), ("es", 1, "B."), ("es", 1, '{"choice": "A. B"}'),
          ("es", 1, '{"choice": "B."}'),
          ("de", 2, "C. B"), ("de", 2, "C)"), ("de", 2, "C. 42 Meter"), ("de", 2, "A. C. D")]
  # es: invalid, right, invalid, right; de: invalid, right, right, invalid.
  check(scored(rows, mcq.DIRECT_RULES),
        {"es": (2 / 4, 2 / 2, 2 / 4), "de": (2 / 4, 2 / 2, 2 / 4)},
        macro=(1 / 2, 1, 1 / 2), micro=(4 / 8, 4 / 4, 4 / 8))


def test_mock_e_garbage_every_fourth_item():
  rows = []
  for i in range(24):  # 3 languages x 8 items; item i: right, right, wrong, garbage, ...
    lang, a = ("es", "ru", "hi")[i // 8], i % 4
    out = ("I cannot answer that." if i % 4 == 3 else
           json.dumps({"choice": LETTER[a if i % 4 < 2 else (a + 1) % 4]}))
    rows.append((lang, a, out))
  _, s = check(scored(rows, mcq.DIRECT_RULES), {lang: (4 / 8, 4 / 6, 2 / 8)
                                                for lang in ("es", "ru", "hi")},
               macro=(1 / 2, 2 / 3, 1 / 4), micro=(12 / 24, 12 / 18, 6 / 24))
  assert s["micro"]["format_error_rate_micro"] == 0.25  # exactly


def test_mock_f_multiline_json_with_extra_keys():
  def out(letter):
    return (f'```json\n{{\n  "reasoning": "Die Fläche ist 12 cm².",\n  "choice": "{letter}",'
            f'\n  "confidence": 0.8\n}}\n```')
  rows = [("de", 0, out("A")), ("de", 1, out("B")), ("de", 2, out("D")), ("de", 3, out("D")),
          ("uk", 0, out("А")), ("uk", 1, out("Б")), ("uk", 2, out("В")), ("uk", 3, out("Г"))]
  check(scored(rows, mcq.DIRECT_RULES), {"de": (3 / 4, 3 / 4, 0), "uk": (1, 1, 0)},
        macro=(7 / 8, 7 / 8, 0), micro=(7 / 8, 7 / 8, 0))


def test_group_with_no_valid_answer_has_no_valid_accuracy():
  items = [mcq.Scored("a", 0, None, {"language": "es"}),
           mcq.Scored("b", 1, None, {"language": "es"}),
           mcq.Scored("c", 1, 1, {"language": "fr"}),
           mcq.Scored("d", 1, 0, {"language": "fr"})]
  table, s = check(items, {"es": (0, None, 1), "fr": (1 / 2, 1 / 2, 0)},
                   macro=(1 / 4, 1 / 2, 1 / 2),  # valid: only fr defines it
                   micro=(1 / 4, 1 / 2, 2 / 4))
  assert table["es"]["valid_accuracy_ci"] is None
  assert table["es"]["num_valid"] == 0


def test_breakdowns_by_several_keys():
  items = scored([("es", 0, "A"), ("es", 1, "C"), ("fr", 2, "C"), ("fr", 3, "?")],
                 mcq.DIRECT_RULES,
                 lambda i: {"modality": "multimodal" if i % 2 == 0 else "text"})
  out = mcq.breakdowns(items, ["language", "modality"], num_bootstrap=B)
  assert out["modality"]["multimodal"]["total_accuracy"] == 2 / 2
  assert out["modality"]["text"]["total_accuracy"] == 0 / 2
  assert out["modality"]["text"]["format_error_rate"] == 1 / 2
  assert out["language"]["fr"]["n"] == 2


@pytest.mark.parametrize("items, message", [
    ([], "no scored items"),
    ([mcq.Scored("x", 0, 0, {"language": "es"})] * 2, "'x': key appears twice"),
    ([mcq.Scored("x", -1, 0, {"language": "es"})], "'x': answer=-1"),
    ([mcq.Scored("x", 0, "B", {"language": "es"})], "'x': choice='B'"),
    ([mcq.Scored("x", 0, 0, {"modality": "text"})], "'x': no group 'language'"),
])
def test_bad_items_name_the_item(items, message):
  with pytest.raises(DataError, match=message):
    mcq.summary(items, num_bootstrap=B)


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals


def mixed_items():
  outcomes = {"es": [1, 1, 0, None, 1, 0], "ru": [0, None, 1, 1, 1, 1], "hi": [1, 0, 0, 0, None, 1]}
  return [mcq.Scored(f"{lang}{i}", 1, c, {"language": lang})
          for lang, cs in outcomes.items() for i, c in enumerate(cs)]


def test_bootstrap_interval_contains_the_estimate_and_is_deterministic():
  items = mixed_items()
  a = mcq.summary(items, num_bootstrap=200, seed=3)
  assert a == mcq.summary(items, num_bootstrap=200, seed=3)
  for agg in ("macro", "micro"):
    for name, value in a[agg].items():
      if not name.endswith("_ci"):
        lo, hi = a[agg][name + "_ci"]
        assert lo <= value <= hi and lo < hi, (agg, name)
  for lang, row in mcq.group_metrics(items, "language", num_bootstrap=200).items():
    for m in mcq.METRICS:
      lo, hi = row[m + "_ci"]
      assert lo <= row[m] <= hi, (lang, m)


def test_bootstrap_interval_helper():
  x = np.random.default_rng(0).normal(size=50)

  def mean(w):
    return w @ x / w.sum(axis=1)
  lo, hi = stats.bootstrap_interval(mean, 50, num_resamples=300, seed=1)
  assert lo < x.mean() < hi
  np.testing.assert_array_equal(stats.bootstrap_interval(mean, 50, num_resamples=300, seed=1),
                                [lo, hi])
  assert not np.array_equal(stats.bootstrap_interval(mean, 50, num_resamples=300, seed=2),
                            [lo, hi])
  # The draws do not depend on how many resamples are drawn at a time (up to float rounding
  # of the matrix products), with strata too.
  np.testing.assert_allclose(
      stats.bootstrap_interval(mean, 50, num_resamples=300, seed=1, chunk=7), [lo, hi],
      rtol=1e-12)
  halves = np.arange(50) % 2
  np.testing.assert_allclose(
      stats.bootstrap_interval(mean, halves, num_resamples=300, seed=1, chunk=7),
      stats.bootstrap_interval(mean, halves, num_resamples=300, seed=1), rtol=1e-12)
  # Every resample has n items; with strata, every stratum keeps its size.
  labels = np.array([0] * 3 + [1] * 5 + [2] * 2)[np.random.default_rng(1).permutation(10)]
  sizes = stats.bootstrap_interval(
      lambda w: np.stack([w[:, labels == s].sum(axis=1) for s in range(3)], axis=1), labels,
      num_resamples=50)
  np.testing.assert_array_equal(sizes, [[3, 3], [5, 5], [2, 2]])
  # A constant statistic collapses; an always-undefined one gives NaN.
  np.testing.assert_array_equal(
      stats.bootstrap_interval(lambda w: np.full(w.shape[0], 0.5), 4, num_resamples=20),
      [0.5, 0.5])
  assert np.isnan(stats.bootstrap_interval(lambda w: np.full(w.shape[0], np.nan), 4,
                                           num_resamples=20)).all()


# ---------------------------------------------------------------------------------------------
# Results files


def test_write_results(tmp_path):
  items = mixed_items()
  per_item = [{"key": it.key, "language": it.groups["language"], "choice": it.choice,
               "answer": it.answer, "output": "Ответ: Б" if i % 2 else "<ANSWER> ख </ANSWER>"}
              for i, it in enumerate(items)]
  workdir = str(tmp_path / "eval")
  config = {"model": "runs/x/hf_model", "regime": "cot", "languages": ["es", "ru", "hi"]}
  res = mcq.write_results(workdir, task="kaleidoscope_cot", items=items,
                          breakdown_keys=["language"], config=config, per_item=per_item,
                          num_bootstrap=B)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == res
  head = res["results"]["kaleidoscope_cot"]
  # By hand: es 3/6, ru 4/6, hi 2/6 right; 1 invalid each.
  assert head["total_accuracy,macro_language"] == pytest.approx((3 / 6 + 4 / 6 + 2 / 6) / 3)
  assert head["valid_accuracy,macro_language"] == pytest.approx((3 / 5 + 4 / 5 + 2 / 5) / 3)
  assert head["format_error_rate,micro"] == pytest.approx(3 / 18)
  assert head["total_accuracy,micro"] == pytest.approx(9 / 18)
  lo, hi = head["total_accuracy_ci,micro"]
  assert lo <= 9 / 18 <= hi
  assert res["breakdowns"]["language"]["ru"]["total_accuracy"] == pytest.approx(4 / 6)
  assert res["configs"]["kaleidoscope_cot"] == config
  assert res["n-samples"]["kaleidoscope_cot"] == {"original": 18, "effective": 18}
  assert files.read_jsonl(os.path.join(workdir, "samples.jsonl")) == per_item
  with open(os.path.join(workdir, "per_language.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(workdir)) == ["per_language.png", "results.json", "samples.jsonl"]


def test_write_results_rejects_a_row_that_is_not_json(tmp_path):
  items = mixed_items()
  with pytest.raises(DataError, match="per-item row 1"):
    mcq.write_results(str(tmp_path), task="t", items=items, breakdown_keys=[], config={},
                      per_item=[{"k": 1}, {"k": object()}], num_bootstrap=B)
