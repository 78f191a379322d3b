"""The sampler on 8 (forced) CPU devices: greedy generation from a model loaded with the FSDP,
tensor-parallel or combined layout, with a sharded KV cache, equals the single-device tokens.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a fresh subprocess.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from jaxlab.core.mesh import make_mesh
    from jaxlab.llm import sampling
    from jaxlab.models.decoder import params as checkpoint
    from tests.models.decoder.tiny_hf import left_padded_batch

    assert jax.device_count() == 8, jax.devices()
    path = sys.argv[1]
    single, _ = checkpoint.from_pretrained(path, tokenizer=False)
    tokens, mask, _ = left_padded_batch(seed=0, lengths=(12, 7, 1, 10, 3, 12, 5, 9))
    params = sampling.SamplingParams(max_new_tokens=8, temperature=0.0)
    want_gen = np.asarray(sampling.generate(single, tokens, mask, jax.random.key(0),
                                            params).tokens)
    for layout, (data, fsdp, tensor) in [("fsdp", (2, 4, 1)), ("tp", (2, 1, 4)),
                                         ("fsdp_tp", (2, 2, 2))]:
      mesh = make_mesh(data, fsdp, tensor)
      model, _ = checkpoint.from_pretrained(path, mesh=mesh, layout=layout, tokenizer=False)
      gen = sampling.generate(model, tokens, mask, jax.random.key(0), params, mesh=mesh)
      np.testing.assert_array_equal(np.asarray(gen.tokens), want_gen, err_msg=layout)
      print(layout, "ok", flush=True)
    print("OK")
    """)


def test_sharded_greedy_generation_matches_single_device(hf_dirs):
  _, path = hf_dirs["qwen3_untied"]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, path], env=env, cwd=repo,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]
