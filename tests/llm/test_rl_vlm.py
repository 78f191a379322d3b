"""RL (``llm_rl``) of a Qwen2.5-VL policy on image rows: rollouts are sampled with the rows'
images, the step's log-probs (a forward over prompt + response with the images) equal the
sampler's, and a short RLOO run with the GroundCUA reward trains and exports."""

import json
import os
import types

import jax
import numpy as np
import pytest

from jaxlab.core import loop
from jaxlab.core.errors import ConfigError
from jaxlab.core.mesh import make_mesh
from jaxlab.grounding import synthetic
from jaxlab.llm import data as data_lib
from jaxlab.llm import rl, sampling, sft
from jaxlab.models.qwen_vl import modeling, processor
from jaxlab.models.qwen_vl import params as vl_ckpt


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
  """Two synthetic screens (``tasks.jsonl``) and a tiny random Qwen2.5-VL with a char
  tokenizer of their texts and a preprocessor_config.json."""
  root = tmp_path_factory.mktemp("rl_vlm")
  data = str(root / "data")
  synthetic.write_dataset(data, 2, 0, (0,), ((256, 160),), instructions_per_screen=2)
  rows = [json.loads(line) for line in open(os.path.join(data, "tasks.jsonl"))]
  c = sft.default_config()
  c.model.family = "qwen_vl"
  c.model.update(dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=16))
  c.model.vision.update(dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2,
                             fullatt_block_indexes=(1,)))
  c.dtype = "float32"
  tok = sft._build_tokenizer(  # pylint: disable=protected-access
      c, str(root / "tok"), [r["question"] + r["gt_response"] for r in rows])
  model = modeling.init_qwen_vl(sft.qwen_vl_config(c, tok), seed=3)
  hf = str(root / "hf")
  vl_ckpt.save_pretrained(model, hf, tokenizer=tok)
  ic = processor.ImageProcessorConfig(patch_size=14, temporal_patch_size=2, merge_size=2)
  with open(os.path.join(hf, processor.PREPROCESSOR_FILE), "w") as f:
    json.dump(ic.to_dict(), f)
  return {"hf": hf, "tasks": os.path.join(data, "tasks.jsonl")}


def _config(d, **over):
  c = rl.default_config()
  c.model.init = d["hf"]
  c.data.train_files = (d["tasks"],)
  c.data.eval_files = (d["tasks"],)
  c.data.image_field = "image"
  c.data.prompt_format = "{image}{question}"
  c.reward.fn = "jaxlab.grounding.reward:groundcua_reward"
  c.steps, c.prompts_per_step, c.group_size = 2, 2, 2
  c.sampling.max_new_tokens = 5
  c.log_every, c.checkpoint.every = 1, 0
  c.eval.update(dict(every=2, num_examples=2, batch_size=2, max_new_tokens=5))
  c.update(over)
  loop.validate(rl.TRAINER, c)
  return c


def test_step_logprobs_equal_the_sampler_and_a_direct_forward(vlm_dir, tmp_path):
  """On-policy, the log-probs the step computes for the sampled tokens (the ratio's
  numerator and denominator) are those the image-conditioned sampler drew them with."""
  c = _config(vlm_dir)
  run = rl.RLRun(c, str(tmp_path / "run"), make_mesh())
  assert run.vlm and run.image_config is not None
  # The prompts and images of every row, as a step builds them for its batch.
  every = np.arange(run.num_rows)
  _, prompt_tokens, prompt_mask, images = run._prompts(every)  # pylint: disable=protected-access
  assert images.pixel_values.shape[1] == run.max_patches
  model = run.model(run.init())
  # The run's own sampling settings and batch shape: the next test's run reuses the program.
  out = sampling.generate(model, prompt_tokens, prompt_mask, jax.random.key(1),
                          run.sampling_params, pixel_values=images)
  resp, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  resp_mask = np.arange(5)[None] < lengths[:, None]
  tokens = np.concatenate([prompt_tokens, resp], 1)
  attn = np.concatenate([prompt_mask, resp_mask], 1)
  extra = rl.vlm_inputs(model.config, tokens, attn, images, run.prompt_len)
  logits = rl.response_logits(run.graphdef, run.init()["state"].policy.params, tokens, attn,
                              run.prompt_len, 1.0, extra["positions_b3t"], extra["images"])
  _, logp, _ = rl.token_stats(logits, resp)
  np.testing.assert_allclose(np.asarray(logp)[resp_mask], np.asarray(out.logprobs)[resp_mask],
                             atol=2e-4)
  # A plain forward of the model with the same images gives the same logits.
  direct = np.asarray(modeling.forward(model, tokens, attn, images))
  np.testing.assert_allclose(np.asarray(logits), direct[:, run.prompt_len - 1:-1], atol=2e-4)

  # The policy may sample the image placeholder id (the GroundCUA study's RLOO did at step
  # ~115 and stopped: rope_index took it for an image). The step must treat it as the sampler
  # did, as text: positions as for any other text id, its text embedding, the same logits.
  image_id, text_id = model.config.image_token_id, 3
  assert text_id != image_id and not np.any(resp == image_id)
  placed = tokens.copy()
  placed[:, run.prompt_len + 1] = image_id  # a real response token in every row
  assert attn[:, run.prompt_len + 1].all()
  as_text = placed.copy()
  as_text[:, run.prompt_len + 1] = text_id
  got = rl.vlm_inputs(model.config, placed, attn, images, run.prompt_len)
  want = rl.vlm_inputs(model.config, as_text, attn, images, run.prompt_len)
  np.testing.assert_array_equal(got["positions_b3t"], want["positions_b3t"])
  np.testing.assert_array_equal(want["positions_b3t"], extra["positions_b3t"])
  params = run.init()["state"].policy.params
  logits = np.asarray(rl.response_logits(run.graphdef, params, placed, attn, run.prompt_len, 1.0,
                                         got["positions_b3t"], images))
  # Reference: the text embedding of the placeholder id at that column, by hand.
  x = model.embed(as_text, images)
  col = run.prompt_len + 1
  x = x.at[:, col].set(model.text.embed(placed[:, col:col + 1])[:, 0])
  h, _ = model.text.hidden(None, attn, np.swapaxes(got["positions_b3t"], 0, 1),
                           inputs_embeds_btd=x)
  ref = np.asarray(model.logits(h))[:, run.prompt_len - 1:-1]
  np.testing.assert_allclose(logits, ref, atol=2e-4)
  assert np.abs(logits[:, 2:] - np.asarray(direct)[:, run.prompt_len + 1:-1]).max() > 1e-3


def test_two_rloo_steps_on_image_rows(vlm_dir, tmp_path):
  c = _config(vlm_dir)
  summary = rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  for r in records:
    assert np.isfinite(r["reward/task"]) and -1 <= r["reward/task"] <= 1
    assert np.isfinite(r["loss/total"])
    np.testing.assert_allclose(r["pg/ratio_mean"], 1.0, atol=1e-4)  # on-policy
  assert "eval/accuracy" in records[-1]
  hf = summary["hf_model"]
  assert processor.PREPROCESSOR_FILE in os.listdir(hf)
  again, _ = vl_ckpt.from_pretrained(hf, tokenizer=False)
  assert again.config == vl_ckpt.load_config(vlm_dir["hf"])


def test_launch_eval_scores_image_rows_as_the_trainer_does(vlm_dir, tmp_path):
  """``launch.eval``'s task_accuracy on a vision-language RL run reads the rows' images: its
  completions equal the trainer's own evaluation of the same parameters."""
  from jaxlab.evals import tasks as task_eval  # pylint: disable=import-outside-toplevel
  c = _config(vlm_dir)
  run = rl.RLRun(c, str(tmp_path / "run"), make_mesh())
  state = run.init()
  metrics, texts = run.evaluator(run.model(state))
  options = types.SimpleNamespace(num_examples=0, workdir=str(tmp_path))
  out = task_eval.task_accuracy(run, state, options)
  got = [json.loads(line)["completion"] for line in open(out["samples"])]
  assert got == texts and out["num_examples"] == 2
  assert out["eval/accuracy"] == metrics["eval/accuracy"]
  assert run.row_images(data_lib.load_rows(c.data.eval_files, 2)) is not None


def test_image_rows_reject_value_critics(vlm_dir):
  c = rl.default_config()
  c.model.init = vlm_dir["hf"]
  c.data.train_files = c.data.eval_files = (vlm_dir["tasks"],)
  c.data.image_field = "image"
  c.pg.advantage = "gae"
  c.critic.num_critics = 1
  with pytest.raises(ConfigError, match="'config.data.image_field'.*num_critics"):
    loop.validate(rl.TRAINER, c)
