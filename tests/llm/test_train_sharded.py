"""On 8 (forced) CPU devices, FSDP (the trainers' default) and FSDP + tensor parallel give the
single-device logits and the single-device training step (updated parameters, optimizer
moments, loss, gradient norm). The tensor-parallel table alone is checked on logits by
tests/models/decoder/test_sharding.py; its rows are the tensor half of "fsdp_tp", run here.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a fresh subprocess.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from jaxlab import optim
    from jaxlab.core.mesh import make_mesh
    from jaxlab.llm import train
    from jaxlab.models.decoder import modeling, sharding
    from jaxlab.models.decoder.config import DecoderConfig

    assert jax.device_count() == 8, jax.devices()
    # 4 query / 2 kv heads: with tensor=4 the kv projections fall back to replication, so the
    # test also covers the rules' fallback; untied head so lm_head_dv has its own rule.
    cfg = DecoderConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=8, architecture="Qwen3ForCausalLM",
                        qk_norm=True, tie_word_embeddings=False)
    rng = np.random.default_rng(0)
    rows, t = 16, 12
    tokens = rng.integers(4, 48, (rows, t)).astype(np.int32)
    loss_mask = np.zeros((rows, t), np.int32)
    for i in range(rows):
      p = int(rng.integers(2, 6)); e = int(rng.integers(p + 1, t + 1))
      loss_mask[i, p:e] = 1
    batch = {"tokens": tokens, "loss_mask": loss_mask}
    # eps=1e-3: Adam's first update g / (|g| + eps) is then a smooth function of g, so
    # float reassociation across devices cannot flip the sign of a near-zero gradient.
    opt = dict(learning_rate=1e-2, schedule="cosine", warmup_steps=0, total_steps=10,
               min_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-3, max_grad_norm=1.0)

    def run(mesh, layout, accum):
      model = modeling.init_decoder(cfg, seed=0)
      tx, schedule = optim.make_optimizer("adamw", decay_mask="matrices", **opt)
      graphdef, state = train.init_train_state(model, tx, mesh, layout)
      b = train.shard_batch(batch, mesh)
      logits = modeling.forward(train.model_from_state(graphdef, state), b["tokens"])
      step = train.make_train_step(graphdef, tx, schedule, grad_accum=accum, mesh=mesh,
                                   state=state, rules=layout)
      new, metrics = step(state, b)
      return np.asarray(logits), new, jax.device_get(metrics)

    want_logits, want, want_m = run(None, "fsdp", 1)
    for layout, shape in [("fsdp", (2, 4, 1)), ("fsdp_tp", (2, 2, 2))]:
      mesh = make_mesh(*shape)
      logits, got, m = run(mesh, layout, 2)
      q = got.params["layers"][0]["attn"]["q_dnh"][...]
      assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated, layout
      # The Adam moments are laid out like their parameters.
      mu = got.opt_state[1][0].mu["layers"][0]["attn"]["q_dnh"][...]
      assert mu.sharding.spec == q.sharding.spec, (layout, mu.sharding.spec, q.sharding.spec)
      err = float(np.abs(logits - want_logits).max())
      assert err < 1e-5, (layout, "logits", err)
      np.testing.assert_allclose(m["loss"], want_m["loss"], rtol=1e-5, err_msg=layout)
      np.testing.assert_allclose(m["grad_norm"], want_m["grad_norm"], rtol=1e-4, err_msg=layout)
      assert m["tokens"] == want_m["tokens"]
      worst = 0.0
      for a, b in zip(jax.tree.leaves((got.params, got.opt_state)),
                      jax.tree.leaves((want.params, want.opt_state))):
        worst = max(worst, float(np.abs(np.asarray(a) - np.asarray(b)).max()))
      assert worst < 1e-5, (layout, "state after one step", worst)
      print(layout, "max|dlogits| =", err, "max|dstate| =", worst, flush=True)
    print("OK")
    """)


def test_fsdp_and_tp_logits_and_train_step_match_single_device():
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=repo, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]
