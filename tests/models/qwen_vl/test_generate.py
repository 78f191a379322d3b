"""Sampling with images: ``jaxlab.llm.sampling.generate`` driving Qwen2.5-VL, against
transformers' ``generate`` and against a full forward of what it generated, and the
``launch.generate --image`` command line.

One batch serves every test: three LEFT-padded prompts built by the host helper
(``jaxlab.models.qwen_vl.inputs``) from texts and PIL images, with 2, 1 and 0 images of
different sizes (so 3 image grids and different rope deltas per row).
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxlab.core.errors import DataError
from jaxlab.llm import sampling
from jaxlab.models.qwen_vl import inputs, modeling, params, processor
from tests.models.qwen_vl.tiny import IMAGE, save_tiny_vl

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [f"{inputs.IMAGE_TOKEN} and {inputs.IMAGE_TOKEN}: which is larger?",
         f"look: {inputs.IMAGE_TOKEN} what color?",
         "no image here, count 1 2 3"]
# (height, width) per image; resized to 56x84, 112x140 (capped area) and 84x56.
SIZES = [[(50, 90), (100, 130)], [(80, 60)], []]
EOS = 2


def _image(h, w, seed):
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(torch reference, its directory, our model, tokenizer, batch dict)."""
  path = str(tmp_path_factory.mktemp("tiny_vl"))
  ref = save_tiny_vl(path, tied=True, seed=0)
  model, tok = params.from_pretrained(path)
  images = [[_image(h, w, 10 * i + j) for j, (h, w) in enumerate(s)] for i, s in
            enumerate(SIZES)]
  image_config = processor.ImageProcessorConfig.from_dir(path)
  ids, pixel_values, grid = inputs.encode(tok, model.config, image_config, TEXTS, images)
  tokens, mask = sampling.left_pad(ids, pad_id=tok.pad_token_id)
  assert len({tuple(g) for g in grid.tolist()}) == 3  # three different image sizes
  batch = dict(tokens=tokens, mask=mask, pixel_values=pixel_values, grid_thw=grid)
  return ref, path, model, tok, batch


def test_greedy_matches_transformers_generate(setup):
  ref, _, model, _, b = setup
  n = 32
  with torch.no_grad():
    out = ref.generate(
        input_ids=torch.tensor(b["tokens"], dtype=torch.int64),
        attention_mask=torch.tensor(b["mask"].astype(np.int64)),
        pixel_values=torch.tensor(b["pixel_values"]),
        image_grid_thw=torch.tensor(b["grid_thw"]),
        # Which tokens are image placeholders (transformers 5 needs this for M-RoPE).
        mm_token_type_ids=torch.tensor((b["tokens"] == IMAGE).astype(np.int64)),
        max_new_tokens=n, do_sample=False,
        pad_token_id=0, eos_token_id=EOS, output_logits=True, return_dict_in_generate=True)
  p = b["tokens"].shape[1]
  want = out.sequences.numpy()[:, p:]
  ref_lp = np.stack([torch.log_softmax(l.float(), -1).numpy() for l in out.logits], 1)
  want_lp = np.take_along_axis(ref_lp, want[..., None], -1)[..., 0]
  k = want.shape[1]  # all rows may stop before n
  want = np.pad(want, ((0, 0), (0, n - k)))
  stops = want == EOS
  want_len = np.where(stops.any(1), stops.argmax(1) + 1, n)

  sp = sampling.SamplingParams(max_new_tokens=n, temperature=0.0, stop_tokens=(EOS,), pad_id=0)
  got = sampling.generate(model, b["tokens"], b["mask"], jax.random.key(0), sp,
                          pixel_values=b["pixel_values"], grid_thw=b["grid_thw"])
  np.testing.assert_array_equal(np.asarray(got.tokens), want)
  np.testing.assert_array_equal(np.asarray(got.lengths), want_len)
  live = np.arange(n)[None] < want_len[:, None]
  got_lp = np.asarray(got.model_logprobs)
  np.testing.assert_allclose(got_lp[:, :k][live[:, :k]], want_lp[live[:, :k]], atol=1e-4, rtol=0)
  np.testing.assert_array_equal(got_lp[~live], 0.0)
  # Greedy: the sampling distribution is the point mass, reported as the model log-prob.
  np.testing.assert_array_equal(np.asarray(got.logprobs), got_lp)


def test_sampled_logprobs_equal_full_forward_and_are_seeded(setup):
  _, _, model, _, b = setup
  n, temp, top_p = 8, 1.0, 0.7
  sp = sampling.SamplingParams(max_new_tokens=n, temperature=temp, top_p=top_p, pad_id=0)
  kw = dict(pixel_values=b["pixel_values"], grid_thw=b["grid_thw"])
  out = sampling.generate(model, b["tokens"], b["mask"], jax.random.key(3), sp, **kw)
  again = sampling.generate(model, b["tokens"], b["mask"], jax.random.key(3), sp, **kw)
  other = sampling.generate(model, b["tokens"], b["mask"], jax.random.key(4), sp, **kw)
  toks = np.asarray(out.tokens)
  np.testing.assert_array_equal(toks, np.asarray(again.tokens))
  assert not np.array_equal(toks, np.asarray(other.tokens))
  np.testing.assert_array_equal(np.asarray(out.lengths), n)  # no stop tokens

  # The generated sequence through the cache-free forward: its log-probs at every new token.
  p = b["tokens"].shape[1]
  full = np.concatenate([b["tokens"], toks], 1)
  full_mask = np.concatenate([b["mask"], np.ones_like(toks, bool)], 1)
  logits = np.asarray(modeling.forward(model, full, full_mask, **kw))[:, p - 1:p - 1 + n]
  model_lp = np.asarray(jax.nn.log_softmax(logits, -1))
  pick = lambda lp: np.take_along_axis(lp, toks[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.model_logprobs), pick(model_lp), atol=1e-4, rtol=0)
  # top-p: every drawn token lies in the nucleus of its step, and its sampling log-prob is the
  # log-prob renormalised over that nucleus.
  flat = logits.reshape(-1, logits.shape[-1]) / temp
  kept = np.asarray(sampling.filter_logits(jax.numpy.asarray(flat), top_p=top_p))
  kept = kept.reshape(logits.shape)
  assert np.isfinite(pick(kept)).all()
  assert (np.isinf(kept).sum(-1) > 0).all()  # the nucleus really excluded tokens
  np.testing.assert_allclose(np.asarray(out.logprobs), pick(np.asarray(
      jax.nn.log_softmax(kept, -1))), atol=1e-4, rtol=0)


def test_input_helper_and_sampler_name_bad_input(setup):
  _, _, model, tok, b = setup
  image_config = processor.ImageProcessorConfig()
  two = [f"{inputs.IMAGE_TOKEN}{inputs.IMAGE_TOKEN}"]
  with pytest.raises(DataError, match=r"prompt 0 has 2 <\|image_pad\|> placeholder\(s\) but 1 "
                     r"image\(s\)"):
    inputs.encode(tok, model.config, image_config, two, [[_image(30, 30, 0)]])
  # A bare placeholder becomes a whole vision span; a wrapped one is left alone.
  assert inputs.wrap_placeholders(f"a{inputs.IMAGE_TOKEN}b{inputs.IMAGE_SPAN}") == (
      f"a{inputs.IMAGE_SPAN}b{inputs.IMAGE_SPAN}")
  sp = sampling.SamplingParams(max_new_tokens=2, temperature=0.0)
  # Row 0's two images dropped: the batch's placeholders outnumber the remaining patches.
  start = int(b["grid_thw"][:2].prod(-1).sum())
  with pytest.raises(ValueError, match="image placeholder tokens"):
    sampling.generate(model, b["tokens"], b["mask"], jax.random.key(0), sp,
                      pixel_values=b["pixel_values"][start:], grid_thw=b["grid_thw"][2:])


def _run(*args):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  return subprocess.run([sys.executable, "-m", "launch.generate", *args], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=180)


def test_generate_cli_with_image(setup, tmp_path):
  _, path, model, tok, _ = setup
  img = str(tmp_path / "img.png")
  _image(60, 90, 7).save(img)
  prompt = "what is in the image?"
  ok = _run(f"--model={path}", f"--image={img}", f"--prompt={prompt}", "--max_new_tokens=4")
  assert ok.returncode == 0, ok.stderr[-2000:]
  # The same greedy decode in-process: the image opens a chat user turn.
  ids, pixel_values, grid = inputs.encode(
      tok, model.config, processor.ImageProcessorConfig.from_dir(path),
      [inputs.image_prompt(prompt, 1)], [[processor.load_image(img)]], chat=True)
  assert ids[0][:3] == [tok.convert_tokens_to_ids("<|user|>"), model.config.vision_start_token_id,
                        IMAGE]
  sp = sampling.SamplingParams(4, temperature=0.0, stop_tokens=(EOS,), pad_id=0)
  out = sampling.generate(model, np.asarray(ids), np.ones((1, len(ids[0])), bool),
                          jax.random.key(0), sp, pixel_values=pixel_values, grid_thw=grid)
  want = tok.decode(np.asarray(out.tokens[0])[:int(out.lengths[0])].tolist(),
                    skip_special_tokens=True)
  assert want.strip() and ok.stdout.splitlines() == [want], (ok.stdout, want)

  missing = str(tmp_path / "nope.png")
  bad = _run(f"--model={path}", f"--image={missing}", "--prompt=hi")
  err = [l for l in bad.stderr.splitlines() if l.strip()]
  assert bad.returncode == 2 and len(err) == 1 and missing in err[0], bad.stderr

  holes = f"--prompt={inputs.IMAGE_TOKEN} vs {inputs.IMAGE_TOKEN}"
  bad = _run(f"--model={path}", f"--image={img}", holes)
  err = [l for l in bad.stderr.splitlines() if l.strip()]
  assert bad.returncode == 2 and len(err) == 1, bad.stderr
  assert "2 <|image_pad|> placeholder(s) but 1 --image" in err[0], err
