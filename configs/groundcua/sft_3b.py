"""GroundNext SFT (spec §2.3 stage 1) of a real Qwen2.5-VL-3B-Instruct on GroundCUA-format
data, on GPUs (documented, not run here: no checkpoint and no hub access on these machines).

    python -m launch.train --config=configs/groundcua/sft_3b.py --workdir=runs/groundnext_3b \\
        --config.model.init=/path/to/Qwen2.5-VL-3B-Instruct \\
        --config.data.train_files=/data/groundcua/train/tasks.jsonl \\
        --config.data.eval_files=/data/groundcua/heldout/tasks.jsonl
    # the paper's exact system prompt, from a text file you supply ({width}/{height} where
    # the resized resolution goes; any JSON braces in it are kept as written):
    python -m launch.train --config=configs/groundcua/sft_3b.py:/path/system_prompt.txt ...

Rows: task rows of :func:`jaxlab.grounding.schema.task_row` (``tasks.jsonl`` of a dataset
written by :mod:`jaxlab.grounding.synthetic`, or GroundCUA RL records converted with
``task_row``), whose ``image_size`` must be the resized frame of THIS config's
``data.max_pixels`` (the loaders' ``image_config`` check). Prompt: Qwen's chat transcript
(system = the row's ``system`` text, or the file's with each row's resized ``WxH``; user =
screenshot + instruction); completion = ``gt_response``, the tool call at the element's
centre, then ``<|im_end|>``.

Recipe (LLaMA-Factory's groundnext-3b.json): full fine-tune including tower and merger,
image_max_pixels 12,845,056, lr 3e-6 cosine with 5 % warmup, 2 epochs, max grad norm 1,
bf16 compute with remat, global batch 16 x #GPUs (128 on the paper's 8 GPUs; here
``batch_size=128`` as 64 micro-batches of 2). ``steps`` = 2 epochs of ~700K instructions /
128 = 10,938; set it from your row count. With 12.8M-pixel images a row holds up to 16,384
image tokens: on one GPU lower ``data.max_pixels`` (and regenerate the rows' frame with the
same value) before anything else.
"""

from jaxlab.grounding import schema
from jaxlab.llm import sft

MAX_PIXELS = 12_845_056  # 16384 * 28 * 28


def get_config(system_prompt_file: str = ""):
  c = sft.default_config()
  c.model.family = "qwen_vl"
  c.model.init = "checkpoints/Qwen2.5-VL-3B-Instruct"  # pass --config.model.init=DIR
  c.model.remat = True
  c.data.train_files = ("runs/groundcua_data/train/tasks.jsonl",)
  c.data.eval_files = ("runs/groundcua_data/heldout/tasks.jsonl",)
  c.data.image_field = "image"
  c.data.image_placeholder = "image"
  system = "{system}"  # the row's own text (ours, with its resized size)
  if system_prompt_file:
    system = schema.system_format(schema.read_system_template(system_prompt_file))
  c.data.prompt_format = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
                          "{image}{question}<|im_end|>\n<|im_start|>assistant\n")
  c.data.completion_format = "{gt_response}"
  c.data.prompt_special_tokens = False  # the transcript carries its own special tokens
  c.data.min_pixels = 56 * 56
  c.data.max_pixels = MAX_PIXELS
  c.data.max_len = 16_384  # the cutoff
  c.dtype = "bfloat16"
  c.layout = "fsdp"
  c.steps = 10_938  # 2 epochs of ~700K rows at batch 128
  c.batch_size = 128
  c.grad_accum = 64
  c.optim.update(dict(learning_rate=3e-6, schedule="cosine", warmup_steps=547,  # 5 %
                      min_lr_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0))
  c.log_every = 10
  c.eval.update(dict(every=1000, num_examples=500, batch_size=16, max_new_tokens=64))
  c.checkpoint.every = 500
  return c
