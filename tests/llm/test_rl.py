"""The LLM RL trainer (jaxlab/llm/rl.py): learning, critics, async lag, bad input (resume with
critics and lag, through a SIGKILL of the launcher: tests/test_resume.py)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import loop
from jaxlab.core import config as config_lib
from jaxlab.core.errors import DataError
from jaxlab.core.errors import ConfigError
from jaxlab.core.mesh import make_mesh
from jaxlab.llm import rl, sft

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sft_chain(tmp_path_factory, stages, **model):
  """Runs the SFT stages of configs/llm/sft_rl_reference.py, each from the previous one's
  export, with the given numbers of steps (and ``model`` sizes overriding the config's);
  returns the last export directory."""
  init = ""
  for stage, steps in stages:
    c = _load_config("configs/llm/sft_rl_reference.py", stage)
    c.steps = steps
    c.model.update(model)
    c.model.init = init
    c.log_every = min(100, steps)
    c.eval.every = 0
    c.checkpoint.every = 0
    c.eval.num_examples = 50
    c.eval.batch_size = 50
    loop.validate(sft.TRAINER, c)
    work = str(tmp_path_factory.mktemp(f"reference_{stage}_{steps}"))
    init = sft.run(c, work, make_mesh(), progress=False)["hf_model"]
  return init


# The RL reference of configs/llm/sft_rl_reference.py (both stages, as the studies use it),
# committed (tests/llm/data/rl_reference/README.md): it samples a wrong neighbour of the answer
# often, so RL can improve. Training it here took ~2 minutes of every suite run.
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "rl_reference")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  """A briefly trained policy (60 clean SFT steps) for the tests of lag, critics and
  bad input: it writes answer-shaped completions with mixed rewards, which is all they need.
  One narrow layer: these tests check mechanics, and every program they compile (sampler,
  policy and critic steps) grows with the layer count."""
  return _sft_chain(tmp_path_factory, (("clean", 60),), num_layers=1, hidden_size=64,
                    intermediate_size=128, head_dim=16)


def _load_config(path: str, arg: str | None = None):
  return config_lib.load_file(os.path.join(REPO, path), arg or None)


def _config(init: str, arg: str = "R1", **overrides):
  c = _load_config("configs/kl_estimators/rloo.py", arg)
  c.model.init = init
  config_lib.set_dotted(c, overrides)
  loop.validate(rl.TRAINER, c)
  return c


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


@pytest.mark.optimized  # a learning threshold (tests/conftest.py)
def test_rloo_raises_the_sampled_reward(tmp_path):
  """60 on-policy RLOO steps with k1-in-reward (R1) from the committed reference: the sampled
  reward of the last 20 steps beats the first 10 by >= 0.15 (measured +0.23: 0.43 -> 0.66),
  and held-out greedy accuracy does not fall (0.71 -> 0.88)."""
  c = _config(REFERENCE, "R1", steps=60, log_every=10, **{
      "eval.every": 0, "checkpoint.every": 0, "eval.num_examples": 100,
      "eval.batch_size": 100, "optim.learning_rate": 3e-4})
  summary = rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  recs = _records(str(tmp_path / "run"))
  first, last = recs[0]["reward/task"], np.mean([r["reward/task"] for r in recs[-2:]])
  assert last >= first + 0.15, [r["reward/task"] for r in recs]
  assert all(r["pg/ratio_mean"] == pytest.approx(1.0, abs=1e-5) for r in recs)
  assert all(r["pg/clip_frac"] == 0 for r in recs)  # strictly on-policy
  assert recs[-1]["kl/exact_rev"] > 0 and recs[-1]["kl/exact_fwd"] > 0
  assert summary["eval/accuracy"] >= 0.5


def test_async_lag_generates_with_the_policy_of_l_updates_ago(policy, tmp_path):
  """With lag 2 the behaviour policy is the initial one for the first two steps (so the
  learner's ratio to it is exactly 1 at step 1) and differs from the learner afterwards.
  The entropy bonus makes every update move the policy, even a group whose rewards are all
  equal (zero advantages)."""
  c = _config(policy, "L3", steps=4, log_every=1, prompts_per_step=4, group_size=4,
              async_lag=2, **{"eval.every": 0, "checkpoint.every": 0, "eval.num_examples": 8,
                              "eval.batch_size": 8, "pg.entropy_coef": 1e-2})
  rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  recs = _records(str(tmp_path / "run"))
  assert recs[0]["kl/behaviour_k3"] == 0.0
  assert recs[1]["kl/behaviour_k3"] > 0  # behaviour = params_0, learner = params_1
  assert all(r["kl/behaviour_k3"] > 0 for r in recs[1:])


def test_disjoint_shards_make_critics_disagree(policy, tmp_path):
  """Critics share their initial weights: trained on the same data they stay identical
  (σ = 0 exactly); on disjoint halves of every group they diverge (spec §2, Fig. 3)."""
  sigmas = {}
  for disjoint in (False, True):
    c = _config(policy, "none", steps=6, log_every=6, prompts_per_step=4, group_size=4, **{
        "pg.advantage": "gae", "critic.num_critics": 2, "critic.disjoint": disjoint,
        "eval.every": 0, "checkpoint.every": 0, "eval.num_examples": 8, "eval.batch_size": 8})
    rl.run(c, str(tmp_path / str(disjoint)), make_mesh(), progress=False)
    sigmas[disjoint] = _records(str(tmp_path / str(disjoint)))[-1]["asyppo/sigma_mean"]
  assert sigmas[False] == 0.0
  assert sigmas[True] > 1e-4


def test_critic_ensemble_gradients_stay_in_their_shard(policy):
  """Through the trainer's own critics: the loss of critic 0 has zero gradient on critic 1's
  parameters and vice versa, and critic m's gradient ignores responses outside its shard."""
  from jaxlab.llm import asyppo  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import params as ckpt  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  c = _config(policy, "none", prompts_per_step=2, group_size=4, **{
      "pg.advantage": "gae", "critic.num_critics": 2})
  model, _ = ckpt.from_pretrained(policy, tokenizer=False)
  graphdef, params = rl.build_critics(c, model)
  # Make the two critics different so a mix-up could not hide.
  params = jax.tree.map(lambda x: x.at[1].add(0.01), params)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(3, 20, size=(8, 10)), jnp.int32)
  attn = jnp.ones((8, 10), bool)
  mask = jnp.ones((8, 10), bool)
  targets = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
  shards = asyppo.shard_masks(jnp.array([0, 1, 0, 1, 1, 0, 0, 1]), 2)

  def loss_of(p, which, tgt):
    values = jax.vmap(lambda q: nnx.merge(graphdef, q)(tokens, attn))(p)
    return asyppo.critic_loss(values, tgt, mask, shards)[1][which]

  g0 = jax.grad(loss_of)(params, 0, targets)
  assert all(float(jnp.max(jnp.abs(x[1]))) == 0.0 for x in jax.tree.leaves(g0))
  assert any(float(jnp.max(jnp.abs(x[0]))) > 0.0 for x in jax.tree.leaves(g0))
  # Changing the targets of critic 1's responses does not move critic 0's gradient.
  moved = targets.at[jnp.array([1, 3, 4, 7])].add(5.0)
  g0b = jax.grad(loss_of)(params, 0, moved)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g0b)):
    np.testing.assert_array_equal(a, b)


def test_exact_kls_match_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 7)), rng.normal(size=(2, 3, 7))
  la = jax.nn.log_softmax(jnp.asarray(a), -1)
  lb = jax.nn.log_softmax(jnp.asarray(b), -1)
  rev, fwd = rl.exact_kls(la, lb)
  pa, pb = np.exp(np.asarray(la)), np.exp(np.asarray(lb))
  np.testing.assert_allclose(rev, np.sum(pa * np.log(pa / pb), -1), rtol=1e-5)
  np.testing.assert_allclose(fwd, np.sum(pb * np.log(pb / pa), -1), rtol=1e-5)
  _, logp, ent = rl.token_stats(jnp.asarray(a), jnp.zeros((2, 3), jnp.int32))
  np.testing.assert_allclose(logp, np.log(pa[..., 0]), rtol=1e-5)
  np.testing.assert_allclose(ent, -np.sum(pa * np.log(pa), -1), rtol=1e-5)


# -- bad input ------------------------------------------------------------------------------------


def nan_reward(rows, completions):
  del rows
  r = np.ones(len(completions))
  r[3] = np.nan
  return r


def short_reward(rows, completions):
  del rows
  return np.ones(len(completions) - 1)


def huge_reward(rows, completions):
  del rows
  return np.where(np.arange(len(completions)) % 2, 3e38, -3e38)


@pytest.mark.parametrize("fn, message", [
    ("tests.llm.test_rl:nan_reward", "returned nan at step 1 for row 3"),
    ("tests.llm.test_rl:short_reward", "expected (16,), one reward per completion"),
])
def test_bad_reward_function_is_named(policy, tmp_path, fn, message):
  c = _config(policy, "none", steps=2, prompts_per_step=4, group_size=4, log_every=1, **{
      "reward.fn": fn, "eval.every": 0, "checkpoint.every": 0})
  with pytest.raises(rl.RewardError, match=message.replace("(", r"\(").replace(")", r"\)")):
    rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)


def test_non_finite_loss_names_step_and_checkpoint(policy, tmp_path):
  c = _config(policy, "none", steps=4, prompts_per_step=4, group_size=4, log_every=1, **{
      "reward.fn": "tests.llm.test_rl:huge_reward", "eval.every": 0, "checkpoint.every": 0})
  with pytest.raises(loop.NonFiniteError, match="at step 1; last good checkpoint: none"):
    rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)


def test_prompt_longer_than_limit_names_file_and_row(policy, tmp_path):
  c = _config(policy, "none", **{"data.max_prompt_len": 8})
  with pytest.raises(DataError, match=r"chain_sum_rl_train.jsonl:2: the prompt has \d+ "
                     "tokens, longer than 'config.data.max_prompt_len'=8"):
    rl.run(c, str(tmp_path / "run"), make_mesh(), progress=False)


@pytest.mark.parametrize("overrides, message", [
    ({"pg.kl.name": "K7"}, "kl.name='K7' is not one of"),
    ({"pg.advantage": "gae"}, "needs 'config.critic.num_critics' >= 1"),
    ({"critic.num_critics": 2}, "does not use a critic"),
    ({"asyppo.adv_mask_k": 0.2}, "needs 'config.critic.num_critics' >= 2"),
    ({"minibatches": 3}, "must divide the 128 responses"),
    ({"data.train_files": ("missing.jsonl",)}, "'config.data.train_files': file 'missing.jsonl' "
     "does not exist; the config file's docstring gives the command that generates it"),
])
def test_bad_config_names_the_key(policy, overrides, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    _config(policy, "R1", **overrides)


def test_launcher_rejects_unknown_estimator_in_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-m", "launch.train",
                        "--config=configs/kl_estimators/rloo.py:R1", "--config.pg.kl.name=k9",
                        f"--config.model.init={tmp_path}", f"--workdir={tmp_path / 'w'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith("error: kl.name='k9' is not one of"), out.stderr
  assert not os.path.exists(tmp_path / "w")
