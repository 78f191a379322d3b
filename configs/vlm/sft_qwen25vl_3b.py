"""Fine-tuning a real Qwen2.5-VL-3B-Instruct checkpoint on image rows, on one GPU (documented,
not run here: these machines have no checkpoint and no hub access).

    python -m launch.train --config=configs/vlm/sft_qwen25vl_3b.py --workdir=runs/vl3b \\
        --config.model.init=/path/to/Qwen2.5-VL-3B-Instruct \\
        [--config.data.train_files=my_train.jsonl --config.data.eval_files=my_eval.jsonl]

Rows are task rows (:mod:`jaxlab.llm.tasks`) with an image path field (``data.image_field``);
the default files are the tiny shapes task (``python -m jaxlab.llm.image_tasks``), a smoke test
of the pipeline. Prompts are rendered in Qwen's chat format with the image placeholder where the
chat template puts an image; the tokenizer's eos (``<|im_end|>`` for the Instruct checkpoints)
ends every completion and is a target. The weights load in float32 masters sharded by
``layout`` (FSDP over the devices), compute in bfloat16 with rematerialised text layers and vision blocks; images
are bounded to ``data.max_pixels`` (1,280 merged patches at most, Qwen's default) and every row
is padded to the largest training row's patch count (``data.max_patches``, 0 = automatic), so
set it explicitly when the training files hold a few outsized images.
"""

from jaxlab.llm import sft


def get_config():
  c = sft.default_config()
  c.model.family = "qwen_vl"
  c.model.init = "checkpoints/Qwen2.5-VL-3B-Instruct"  # pass --config.model.init=DIR
  c.model.remat = True
  c.data.train_files = ("data/vlm/shapes_train.jsonl",)
  c.data.eval_files = ("data/vlm/shapes_eval.jsonl",)
  c.data.image_field = "image"
  c.data.image_placeholder = "image"
  c.data.prompt_format = ("<|im_start|>user\n{image}{question}<|im_end|>\n"
                          "<|im_start|>assistant\n")
  c.data.completion_format = "{answer}"
  c.data.prompt_special_tokens = False  # the rendered transcript carries its own tokens
  c.data.min_pixels = 56 * 56
  c.data.max_pixels = 28 * 28 * 1280
  c.dtype = "bfloat16"
  c.layout = "fsdp"
  c.steps = 500
  c.batch_size = 16
  c.grad_accum = 2
  c.optim.learning_rate = 1e-5
  c.optim.warmup_steps = 25
  c.optim.weight_decay = 0.0
  c.log_every = 10
  c.eval.every = 100
  c.eval.num_examples = 200
  c.eval.batch_size = 50
  c.eval.max_new_tokens = 16
  c.checkpoint.every = 100
  return c
