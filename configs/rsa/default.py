"""RSA with the paper's population settings (spec llm_rl.md §3.3) on a local model.

    python -m launch.rsa --model=DIR --task=chain_sum --config=configs/rsa/default.py \
        --workdir=runs/rsa_chain_sum [--config.num_problems=0 --config.generation.chat=True]

N=16 members, aggregation sets of K=4, T=10 steps (step 0 is plain sampling, so 160
generations per problem), one island, temperature 1.0, candidates shortened to fit a
1024-token prompt. Baselines in the same results.json: the K=1 self-refinement run and plain
sampling with majority vote / pass@n at equal generated tokens. Set ``generation.chat=True`` for
an instruct checkpoint, and ``prompt.kind`` / ``prompt.answer_format`` (or whole templates) to
the task's wording.

Your own prompt wording goes in a config file of your own that starts from this one, e.g.
``c.prompt.aggregate = open("my_aggregate.txt").read()`` (fields: see
``jaxlab.llm.rsa.Prompts``); a char-level toy model wants short templates.

Time, measured on 2 shared CPU cores with a random 0.6M-parameter char-level decoder
(the configs/llm/sft_rl_reference.py shape): ``--config.num_problems=2 --config.steps=2
--config.baselines.sampling=False --config.baselines.self_refine=False`` takes 43 s including
~10 s of start-up and compile (prompts padded to 1024 tokens dominate). The full default
(32 problems, T=10, both baselines: ~28 population-sized steps of 512 prompts) is therefore
about an hour on such a CPU (an extrapolation, not a measurement); on one GPU, minutes.
"""

from jaxlab.llm import rsa


def get_config():
  c = rsa.default_config()
  c.num_problems = 32
  c.generation.max_new_tokens = 16
  c.generation.max_prompt_tokens = 1024
  return c
