"""Qwen2.5-VL on 8 (forced) CPU devices: the sharding rules place every parameter of the tiny
model, and on a mesh the model computes what it computes on one device.

* Logits of a left-padded batch with images of four sizes (two in one row, none in another),
  with parameters loaded straight onto a 2x4 (fsdp, tensor) mesh by
  ``from_pretrained(mesh=, layout="fsdp_tp")`` and the prompt's rows split over the fsdp
  devices, equal the single-device logits in float32 within 1e-5 absolute (measured ~2e-7:
  only the order of the sharded sums differs).
* Greedy generation with the parameters on that mesh gives the single-device tokens.
* Rule tables: every layout of the decoder exists, and for the published 3B/7B shapes only the
  documented dimensions fall back to replicated.

jax reads XLA_FLAGS once, at import, so the 8-device runs happen in a fresh subprocess.
"""

import os
import subprocess
import sys
import textwrap

import jax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh

from jaxlab.models.decoder import sharding as decoder_sharding
from jaxlab.models.paths import path_str
from jaxlab.models.qwen_vl import sharding
from jaxlab.models.qwen_vl.config import QwenVLConfig
from jaxlab.models.qwen_vl.modeling import abstract_qwen_vl

pytest.importorskip("torch")
pytest.importorskip("transformers")

_SCRIPT = textwrap.dedent("""
    import sys, time
    t0 = time.time()
    import jax, numpy as np
    from flax import nnx
    from PIL import Image
    from jax.sharding import PartitionSpec as P
    from jaxlab.core.mesh import make_mesh
    from jaxlab.llm import sampling
    from jaxlab.models.qwen_vl import inputs, modeling, params, processor, sharding

    assert jax.device_count() == 8, jax.devices()
    path = sys.argv[1]
    single, tok = params.from_pretrained(path)
    img = inputs.IMAGE_TOKEN
    texts = [f"{img} and {img}?", f"see {img}", "no image, 1 2 3", f"{img} color"]
    sizes = [[(50, 90), (100, 130)], [(80, 60)], [], [(60, 60)]]
    rng = np.random.default_rng(0)
    images = [[Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in s]
              for s in sizes]
    ids, pixels, grid = inputs.encode(tok, single.config,
                                      processor.ImageProcessorConfig.from_dir(path), texts,
                                      images)
    assert len({tuple(g) for g in grid.tolist()}) == 4, grid
    tokens, mask = sampling.left_pad(ids, pad_id=tok.pad_token_id)
    print("setup", round(time.time() - t0, 1), flush=True)
    want = np.asarray(modeling.forward(single, tokens, mask, pixels, grid))
    prompt = modeling.prepare_prompt(single.config, tokens, mask, pixels, grid)

    def sharded_logits(model, mesh):
      graphdef, state = nnx.split(model)

      @jax.jit
      def f(state, prompt):
        m = nnx.merge(graphdef, state)
        h, _ = m.prompt_hidden(prompt.tokens, prompt.mask, prompt.positions,
                               prompt.pixel_values, prompt.grid)
        return m.logits(h)
      return np.asarray(f(state, sharding.shard_prompt(prompt, mesh)))

    sp = sampling.SamplingParams(max_new_tokens=6, temperature=0.0)
    want_gen = np.asarray(sampling.generate(single, tokens, mask, jax.random.key(0), sp,
                                            pixel_values=pixels, grid_thw=grid).tokens)
    print("single device", round(time.time() - t0, 1), flush=True)

    # A 2x4 (fsdp, tensor) mesh under "fsdp_tp" uses every row of the VLM tables but the
    # replicated patch embedding of "tp" (another layout would add ~5 s of compiling).
    mesh = make_mesh(1, 2, 4)
    model, _ = params.from_pretrained(path, mesh=mesh, layout="fsdp_tp", tokenizer=False)
    q = model.text.layers[0].attn.q_dnh[...]
    assert q.sharding.spec == P("fsdp", "tensor", None), q.sharding
    gate = model.visual.blocks[0].mlp.gate_df[...]
    assert gate.sharding.spec == P("fsdp", "tensor"), gate.sharding
    fc2 = model.visual.merger.fc2_wd[...]
    assert fc2.sharding.spec == P("tensor", "fsdp"), fc2.sharding
    got = sharded_logits(model, mesh)
    m = mask.astype(bool)
    err = float(np.abs(got[m] - want[m]).max())
    assert err < 1e-5, err
    print("logits max abs diff", err, round(time.time() - t0, 1), flush=True)
    # The prompt's rows split over the mesh, the KV cache's kv heads over tensor.
    out = sampling.generate(model, tokens, mask, jax.random.key(0), sp, pixel_values=pixels,
                            grid_thw=grid, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(out.tokens), want_gen)
    print("greedy tokens equal", round(time.time() - t0, 1), flush=True)
    print("OK")
    """)


def test_sharded_logits_and_greedy_generation_match_single_device(tmp_path):
  from tests.models.qwen_vl.tiny import save_tiny_vl  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "tiny_vl")
  save_tiny_vl(path, tied=False, seed=1)
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, path], env=env, cwd=repo,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]


def test_every_decoder_layout_has_a_vlm_table():
  assert set(sharding.RULES) == set(decoder_sharding.RULES)
  for name, table in sharding.RULES.items():
    # The decoder's rows come last, unchanged, so the text model is placed as a Decoder.
    n = len(decoder_sharding.RULES[name])
    assert tuple(table[-n:]) == tuple(decoder_sharding.RULES[name])
  with pytest.raises(ValueError, match="unknown sharding layout 'zero3'"):
    sharding.rules_for("zero3")


def _published(text_width, text_f, heads, kv_heads, vocab, tied):
  """A Qwen2.5-VL-3B/7B-shaped config with one text layer and one vision block (the rules
  see shapes only, and every layer has the same ones)."""
  return QwenVLConfig.from_hf_dict(dict(
      model_type="qwen2_5_vl", tie_word_embeddings=tied,
      text_config=dict(hidden_size=text_width, intermediate_size=text_f, num_hidden_layers=1,
                       num_attention_heads=heads, num_key_value_heads=kv_heads,
                       vocab_size=vocab, rope_parameters={"rope_type": "default",
                                                          "rope_theta": 1e6,
                                                          "mrope_section": [16, 24, 24]}),
      vision_config=dict(depth=1, hidden_size=1280, intermediate_size=3420, num_heads=16,
                         out_hidden_size=text_width, patch_size=14, spatial_merge_size=2,
                         temporal_patch_size=2, window_size=112, fullatt_block_indexes=[0],
                         in_channels=3)))


_KV = {"k_dkh", "v_dkh", "k_bias_kh", "v_bias_kh"}
_VISION_F = {"gate_df", "up_df", "down_fd", "gate_bias_f", "up_bias_f"}


@pytest.mark.parametrize("model,mesh,layout,want", [
    # Any power-of-two fsdp axis divides every split dimension.
    ("3B", (1, 8, 1), "fsdp", set()), ("7B", (1, 8, 1), "fsdp", set()),
    ("3B", (1, 2, 4), "fsdp_tp", {("text", n) for n in _KV}),
    ("7B", (1, 2, 4), "fsdp_tp", set()),
    ("7B", (2, 1, 4), "tp", set()),
    ("3B", (1, 1, 8), "tp", {("text", n) for n in _KV} | {("visual", n) for n in _VISION_F}),
    ("7B", (1, 1, 8), "fsdp_tp", {("text", n) for n in _KV | {"q_dnh", "q_bias_nh", "o_nhd"}}
     | {("visual", n) for n in _VISION_F}),
])
def test_published_shapes_fall_back_only_where_documented(model, mesh, layout, want):
  config = {"3B": _published(2048, 11008, 16, 2, 151936, True),
            "7B": _published(3584, 18944, 28, 4, 152064, False)}[model]
  _, state = nnx.split(abstract_qwen_vl(config))
  lines = sharding.fallbacks(state, AbstractMesh(mesh, ("data", "fsdp", "tensor")), layout)
  got = {(line.split("/")[0], line.split()[0].rsplit("/", 1)[-1]) for line in lines}
  assert got == want, lines
  # Every other vision weight matrix is split along some axis (but the small patch embedding,
  # replicated under pure tensor parallelism).
  shapes = {p: x.shape for p, x in _paths(state)
            if p.startswith("visual/") and "bias" not in p and x.ndim >= 2
            and ("visual", p.rsplit("/", 1)[-1]) not in want
            and not (layout == "tp" and "patch_embed" in p)}
  assert shapes
  amesh = AbstractMesh(mesh, ("data", "fsdp", "tensor"))
  for p, shape in shapes.items():
    assert any(a is not None for a in sharding.spec_for(p, shape, layout, amesh)), p


def _paths(state):
  return [(path_str(kp), x) for kp, x in jax.tree_util.tree_leaves_with_path(state)]
