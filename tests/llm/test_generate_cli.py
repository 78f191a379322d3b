"""The launch.generate entry point: the same completions as an in-process greedy decode, and a
bad model directory reported in one line (the registry names the unknown architecture)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlab import models
from jaxlab.models import tokenizer as tok_lib
from tests.models.decoder.tiny_hf import save_tiny_char_decoder


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  return save_tiny_char_decoder(str(tmp_path_factory.mktemp("tiny")), "0123456789+= abcdefghij?")


def _run(*args):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  return subprocess.run([sys.executable, "-m", "launch.generate", *args], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=120)


def test_generate_cli_prints_completion(tiny_model_dir):
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  prompts = ["1+2=", "abc?"]
  proc = _run(f"--model={tiny_model_dir}", f"--prompt={prompts[0]}", f"--prompt={prompts[1]}",
              "--max_new_tokens=6", "--temperature=0")
  assert proc.returncode == 0, proc.stderr[-2000:]
  # The same greedy decode in-process.
  model, tok = models.from_pretrained(tiny_model_dir)
  tokens, mask = sampling.left_pad(tok_lib.encode_prompts(tok, prompts), tok.pad_token_id)
  params = sampling.SamplingParams(6, temperature=0.0, stop_tokens=(tok.eos_token_id,),
                                   pad_id=tok.pad_token_id)
  out = sampling.generate(model, tokens, mask, jax.random.key(0), params)
  want = [tok.decode(np.asarray(r)[:n].tolist(), skip_special_tokens=True)
          for r, n in zip(out.tokens, out.lengths)]
  assert proc.stdout.splitlines() == want
  chat = _run(f"--model={tiny_model_dir}", "--prompt=1+2=", "--max_new_tokens=6",
              "--temperature=0.8", "--top_p=0.9", "--top_k=5", "--seed=3", "--chat")
  assert chat.returncode == 0 and len(chat.stdout.splitlines()) == 1, chat.stderr[-2000:]


def test_generate_cli_bad_model_dir_is_one_line_exit_2(tmp_path):
  (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
  proc = _run(f"--model={tmp_path}", "--prompt=x")
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and "GPT2LMHeadModel" in err[0] and "config.json" in err[0], proc.stderr
