"""HrmText checkpoints: float32 parity with transformers' PyTorch ``HrmTextForCausalLM`` (logits
on a padded batch, greedy generation, gradients), and our save -> transformers load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import models
from jaxlab.llm import sampling
from jaxlab.models.looped import modeling, params
from jaxlab.models.looped.config import LoopedConfig
from jaxlab.models.paths import path_str
from tests.models.looped.conftest import VARIANTS, padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _torch_logits(ref, tokens, mask, positions):
  with torch.no_grad():
    return ref(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
               position_ids=torch.tensor(positions)).logits.numpy()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(hrm_dirs, name):
  ref, path = hrm_dirs[name]
  assert models.family_for(path) == "looped"
  model, tok = models.from_pretrained(path)
  assert isinstance(model, modeling.LoopedLM) and tok is not None
  c = model.config
  assert c.num_iterations == ref.config.H_cycles and c.inner_iterations == ref.config.L_cycles
  tokens, mask, positions = padded_batch()
  want = _torch_logits(ref, tokens, mask, positions)
  got = np.asarray(modeling.forward(model, jnp.asarray(tokens), jnp.asarray(mask)))
  assert got.dtype == np.float32
  # Pad positions are garbage on both sides: compare real tokens only.
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_transformers(hrm_dirs):
  ref, path = hrm_dirs["hrm"]
  model, _ = models.from_pretrained(path, tokenizer=False)
  tokens, mask, _ = padded_batch(seed=1, lengths=(6, 3))
  steps = 20
  out = sampling.generate(model, tokens, mask, jax.random.key(0),
                          sampling.SamplingParams(max_new_tokens=steps, temperature=0.0))
  with torch.no_grad():
    want = ref.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                        max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                        pad_token_id=0, eos_token_id=None).numpy()[:, tokens.shape[1]:]
  assert len(np.unique(want)) > 3  # not a degenerate repeat of one token
  np.testing.assert_array_equal(np.asarray(out.tokens), want)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradients_match_transformers(hrm_dirs, name):
  """Also HrmText's ``L_bp_cycles``: in "hrm" (2 x 2 cycles, bp [2] left-padded to [1, 2]) the
  first inner iteration of the first outer iteration carries no gradient in transformers."""
  ref, path = hrm_dirs[name]
  model, _ = models.from_pretrained(path, tokenizer=False)
  assert model.config.truncate_inner
  assert model.config.inner_nograd_counts() == ({"hrm": (1, 0)}.get(name) or (0, 0, 0))
  tokens, mask, positions = padded_batch(seed=2)
  tgt_mask = mask[:, 1:] & mask[:, :-1]

  def loss_fn(m):
    logits, _ = m(jnp.asarray(tokens), jnp.asarray(mask))
    lp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(lp, jnp.asarray(tokens)[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * tgt_mask) / tgt_mask.sum()

  loss, grads = nnx.value_and_grad(loss_fn)(model)

  ref.zero_grad()
  logits = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
               position_ids=torch.tensor(positions)).logits
  lp = torch.log_softmax(logits[:, :-1], -1)
  nll = -torch.gather(lp, -1, torch.tensor(tokens)[:, 1:, None])[..., 0]
  tm = torch.tensor(tgt_mask.astype(np.float32))
  ref_loss = (nll * tm).sum() / tm.sum()
  ref_loss.backward()
  np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=1e-5)

  torch_grads = {n.replace(".self_attn.o_proj.", ".attn.o_proj."): p.grad
                 for n, p in ref.named_parameters() if p.grad is not None}
  table = params.hf_param_map(model.config)
  checked = 0
  for kp, g in jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param)):
    src = table[path_str(kp)]
    if src.tensor.name == "model.z_L_init":  # frozen in transformers, stopped in ours
      assert not np.any(np.asarray(g))
      continue
    want = torch_grads[src.tensor.name].numpy()
    got = src.tensor.to_hf(np.asarray(g))
    scale = np.abs(want).max()
    assert scale > 0, src.tensor.name
    np.testing.assert_allclose(got / scale, want / scale, atol=1e-4, err_msg=src.tensor.name)
    checked += 1
  assert checked == len(table) - 1


def test_save_then_transformers_loads_it(hrm_dirs, tmp_path):
  ref, path = hrm_dirs["hrm_bias_tied"]
  model, tok = models.from_pretrained(path)
  out = str(tmp_path / "saved")
  params.save_pretrained(model, out, tokenizer=tok)
  back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(back).__name__ == "HrmTextForCausalLM"
  want = ref.state_dict()
  got = back.state_dict()
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)
  # And our loader reads what we wrote.
  again, _ = models.from_pretrained(out, tokenizer=False)
  tokens, mask, _ = padded_batch()
  np.testing.assert_array_equal(np.asarray(modeling.forward(again, tokens, mask)),
                                np.asarray(modeling.forward(model, tokens, mask)))


def test_config_roundtrip(hrm_dirs):
  _, path = hrm_dirs["hrm"]
  config = params.load_config(path)
  d = config.to_hf_dict()
  hf = transformers.HrmTextConfig(**{k: v for k, v in d.items()
                                     if k not in ("architectures", "model_type", "dtype")})
  assert hf.num_layers_per_stack == config.n_core
  assert hf.num_hidden_layers == d["num_hidden_layers"]
  assert LoopedConfig.from_hf_dict(hf.to_dict()) == LoopedConfig.from_hf_dict(d)
  # A legacy file holding the per-stack count in num_hidden_layers reads the same.
  legacy = {k: v for k, v in d.items() if k != "num_layers_per_stack"}
  legacy["num_hidden_layers"] = config.n_core
  assert LoopedConfig.from_hf_dict(legacy) == config.replace(dtype="float32")
