"""FSDP and tensor-parallel layouts on 8 (forced) CPU devices give the single-device logits.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a fresh subprocess.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
from jax.sharding import PartitionSpec as P

from jaxlab.models.decoder import sharding

_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxlab.core.mesh import make_mesh
    from jaxlab.models.decoder import modeling, params, sharding
    from tests.models.decoder.tiny_hf import left_padded_batch

    assert jax.device_count() == 8, jax.devices()
    path = sys.argv[1]
    single, _ = params.from_pretrained(path, tokenizer=False)
    tokens, mask, _ = left_padded_batch(seed=0, lengths=(12, 7, 1, 10, 3, 12, 5, 9))
    want = np.asarray(modeling.forward(single, tokens, mask))
    for layout, (data, fsdp, tensor) in [("fsdp", (2, 4, 1)), ("tp", (2, 1, 4)),
                                         ("fsdp_tp", (2, 2, 2))]:
      mesh = make_mesh(data, fsdp, tensor)
      model, _ = params.from_pretrained(path, mesh=mesh, layout=layout, tokenizer=False)
      q = model.layers[0].attn.q_dnh[...]
      assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated, layout
      batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
      t, m = jax.device_put((jnp.asarray(tokens), jnp.asarray(mask)), batch)
      got = modeling.forward(model, t, m)
      err = float(np.abs(np.asarray(got) - want)[mask].max())
      assert err < 1e-4, (layout, err)
      # Sharding the randomly initialised model in place works the same way.
      reshard = sharding.shard_model(single, mesh, layout)
      err2 = float(np.abs(np.asarray(modeling.forward(reshard, t, m)) - want)[mask].max())
      assert err2 < 1e-4, (layout, err2)
      print(layout, "max|dlogits| =", err, flush=True)
    print("OK")
    """)


def test_fsdp_and_tensor_parallel_logits_match_single_device(hf_dirs):
  _, path = hf_dirs["qwen3_untied"]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, path], env=env, cwd=repo,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]


def _mesh_like(**shape):
  class FakeMesh:  # spec_for only reads axis sizes
    pass
  m = FakeMesh()
  m.shape = shape
  return m


def test_rules_are_data_and_fall_back_to_replication():
  mesh = _mesh_like(data=1, fsdp=2, tensor=4)
  assert sharding.spec_for("layers/3/attn/q_dnh", (64, 8, 16), "tp", mesh) == P(None, "tensor",
                                                                                None)
  # 2 kv heads cannot be split 4 ways: replicated instead of an uneven split.
  assert sharding.spec_for("layers/3/attn/k_dkh", (64, 2, 16), "tp", mesh) == P(None, None, None)
  assert sharding.spec_for("layers/0/mlp/down_fd", (96, 64), "fsdp_tp", mesh) == P("tensor",
                                                                                   "fsdp")
  assert sharding.spec_for("final_norm/scale", (64,), "fsdp", mesh) == P(None)
  custom = ((r"embedding_vd$", P("fsdp", None)),)
  assert sharding.spec_for("embedding_vd", (128, 64), custom, mesh) == P("fsdp", None)
  assert np.all([isinstance(v, tuple) for v in sharding.RULES.values()])
