"""RSA with its batch sharded over 8 (forced) CPU devices gives the same populations as on one
device: keys follow (seed, problem, step, member), never the device a row lands on.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a fresh subprocess. Marked
slow (two sampler compiles in a fresh process); run it with ``-m slow``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    from jaxlab import models
    from jaxlab.core.mesh import make_mesh
    from jaxlab.llm import rsa, tasks

    assert jax.device_count() == 8, jax.devices()
    model, tok = models.from_pretrained(sys.argv[1])
    rows = [dict(r, question=r["question"].split(": ")[-1])
            for r in tasks.load_jsonl("data/llm/chain_sum_eval.jsonl", 2)]
    c = rsa.default_config()
    c.population, c.k, c.steps = 4, 2, 2
    c.prompt.aggregate = c.prompt.refine = "{question}|{candidates}|"
    c.generation.max_new_tokens, c.generation.max_prompt_tokens = 4, 128
    rsa.validate(c)
    one = rsa.run(c, rows, rsa.SamplerGenerator(model, tok, 4, 128))
    mesh = make_mesh(8, 1, 1)
    sharded = rsa.run(c, rows, rsa.SamplerGenerator(model, tok, 4, 128, mesh=mesh))
    assert [s["problems"] for s in one] == [s["problems"] for s in sharded]
    print("OK")
    """)


@pytest.mark.slow
def test_rsa_on_8_devices_equals_one_device(tmp_path):
  from jaxlab.models import tokenizer as tok_lib
  from jaxlab.models.decoder import config, modeling, params
  tok = tok_lib.train_char_tokenizer(["0123456789+-= abcdefghijklmnopqrstuvwxyz|?.:[]"], None)
  cfg = config.DecoderConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                             num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                             architecture="Qwen3ForCausalLM", qk_norm=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  params.save_pretrained(modeling.init_decoder(cfg, seed=0), str(tmp_path), tokenizer=tok)
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo,
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
