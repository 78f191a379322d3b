"""The model-family registry: config.json -> family, dispatch, one-line errors, registration."""

import json
import sys

import numpy as np
import pytest

from jaxlab import models
from jaxlab.models.decoder import config as decoder_config
from jaxlab.models.errors import ModelConfigError
from tests.models.decoder.tiny_hf import MODELS, left_padded_batch


def _write_config(path, d):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(d))
  return str(path)


def test_decoder_entry_agrees_with_its_config_module():
  fam = models.FAMILIES["decoder"]
  assert fam.architectures == decoder_config.SUPPORTED_ARCHITECTURES
  # pylint: disable-next=protected-access
  assert set(fam.model_types) == set(decoder_config._MODEL_TYPE_TO_ARCH)


def test_every_tiny_checkpoint_is_a_decoder_and_loads_like_the_family(hf_dirs):
  from jaxlab.models.decoder import modeling, params  # pylint: disable=g-import-not-at-top
  for name in MODELS:
    _, path = hf_dirs[name]
    assert models.family_for(path) == "decoder", name
  _, path = hf_dirs["qwen2"]
  via_registry, tok = models.from_pretrained(path)
  direct, _ = params.from_pretrained(path, tokenizer=False)
  assert tok is not None and via_registry.config == direct.config
  tokens, mask, _ = left_padded_batch()
  np.testing.assert_array_equal(np.asarray(modeling.forward(via_registry, tokens, mask)),
                                np.asarray(modeling.forward(direct, tokens, mask)))


def test_architectures_first_then_model_type():
  assert models.family_for({"architectures": ["Qwen3ForCausalLM"]}) == "decoder"
  assert models.family_for({"model_type": "llama"}) == "decoder"
  # A known class anywhere in the list is enough; model_type is not consulted then.
  assert models.family_for({"architectures": ["Nope", "LlamaForCausalLM"],
                            "model_type": "nope"}) == "decoder"
  with pytest.raises(ModelConfigError, match="'NopeForCausalLM'"):
    models.family_for({"architectures": ["NopeForCausalLM"], "model_type": "llama"})


def test_unknown_architecture_is_one_line_naming_file_value_and_known(tmp_path):
  path = _write_config(tmp_path / "m", {"architectures": ["GPT2LMHeadModel"],
                                        "model_type": "gpt2"})
  with pytest.raises(ModelConfigError) as e:
    models.from_pretrained(path)
  msg = str(e.value)
  assert "\n" not in msg
  assert str(tmp_path / "m" / "config.json") in msg and "'GPT2LMHeadModel'" in msg
  assert all(a in msg for a in decoder_config.SUPPORTED_ARCHITECTURES)
  assert isinstance(e.value, ValueError)


def test_unknown_model_type_and_missing_fields_and_files(tmp_path):
  path = _write_config(tmp_path / "a", {"model_type": "gpt2"})
  with pytest.raises(ModelConfigError, match=r"config.json: unknown model_type 'gpt2'.*qwen3"):
    models.family_for(path)
  path = _write_config(tmp_path / "b", {"vocab_size": 3})
  with pytest.raises(ModelConfigError, match="no 'architectures' or 'model_type'"):
    models.family_for(path)
  (tmp_path / "c").mkdir()
  with pytest.raises(ModelConfigError, match=r"c/config.json: missing"):
    models.family_for(str(tmp_path / "c"))
  with pytest.raises(ModelConfigError, match="does not exist"):
    models.family_for(str(tmp_path / "nowhere"))
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "config.json").write_text("{not json")
  with pytest.raises(ModelConfigError, match=r"d/config.json: not valid JSON"):
    models.family_for(str(tmp_path / "d"))


def test_a_registered_family_is_imported_only_when_loaded(tmp_path, monkeypatch):
  pkg = tmp_path / "src"
  pkg.mkdir()
  (pkg / "toy_family_for_registry_test.py").write_text(
      "def from_pretrained(path, **kw):\n  return ('toy', path, kw)\n")
  monkeypatch.syspath_prepend(str(pkg))
  monkeypatch.setattr(models, "FAMILIES", dict(models.FAMILIES))
  models.register("toy", "toy_family_for_registry_test", architectures=["ToyForCausalLM"],
                  model_types=["toy"])
  path = _write_config(tmp_path / "m", {"model_type": "toy"})
  assert models.family_for(path) == "toy"
  assert "toy_family_for_registry_test" not in sys.modules
  assert models.from_pretrained(path, dtype="x") == ("toy", path, {"dtype": "x"})
  assert "toy_family_for_registry_test" in sys.modules
  with pytest.raises(ModelConfigError, match="ToyForCausalLM"):  # now listed as known
    models.family_for({"architectures": ["Other"]})
  with pytest.raises(ValueError, match="already belong to family 'decoder'"):
    models.register("clash", "x", architectures=["LlamaForCausalLM"])
  monkeypatch.delitem(sys.modules, "toy_family_for_registry_test")
