"""Non-stationary digits, the Stable-Gradients diagnosis and fix on a CPU (spec §2.1, §7.1 item 1).

    python -m launch.train --config=configs/stable_gradients/ns_digits.py:plain12 \
        --workdir=runs/sg_digits/plain12
    python -m launch.analyze --workdir='runs/sg_digits/*' --last=5 \
        --keys=test/accuracy,health/dormant_ratio,health/grad_norm/trunk/hidden/0

Variants (the part after the colon): ``plain4``, ``plain8``, ``plain12`` (plain ReLU MLPs of 4, 8,
12 hidden layers, width 256), ``multiskip1``, ``multiskip3``, ``multiskip5`` (multi-skip residual
MLPs with k blocks and LayerNorm, width 256), ``plain12_kron`` (the deepest plain MLP with
Kron, lr rule /3), and the arms that separate skips from LayerNorm at the same depth:
``plain12_ln`` (plain + LN), ``residual5`` / ``residual5_ln`` (5 pre-activation residual blocks
without the multi-skip's global skip, without / with LN) and ``multiskip5_noln``. Everything else is configs/sigreg/ns_digits.py without SIGReg: sklearn's digits,
labels re-permuted every 10 epochs, 60 epochs, Adam lr 1e-3, batch 128, 2 seeds vmapped
(the documented results use ``--config.num_seeds=5``).
Time with 5 seeds on a busy 2-core CPU: 43-130 s per Adam variant, 462-1,050 s for
``plain12_kron`` (vmapped seeds pay Kron's preconditioner refit every step). All seven variants
of the page's table and its CSVs: ``bash configs/stable_gradients/digits_study.sh``.
Expected (spec §2.1): deeper plain MLPs recover less after each shift, with smaller gradient norms
in the early layers; multi-skip + LN and Kron keep both. Measured (5 seeds, 2026-12-07, mean ± 95% Student-t
interval): accuracy at the final epoch 0.9799 ± 0.0063 / 0.936 ± 0.044 / 0.76 ± 0.26 for plain
4 / 8 / 12 layers, 0.9810 ± 0.0075 for multi-skip k = 5 and 0.968 ± 0.017 for plain 12 + Kron; the first layer's gradient norm grows with depth here instead of shrinking.
Skips x LayerNorm at 12 layers (5 seeds, 2026-12-05), mean accuracy over all epochs: plain 0.710
± 0.048, plain + LN 0.932 ± 0.015, residual 0.9156 ± 0.0056, residual + LN 0.9251 ± 0.0085,
multi-skip 0.79 ± 0.11, multi-skip + LN 0.8991 ± 0.0097.
Tables with intervals: docs/reproductions/stable_gradients.md (``python -m launch.ns_phases``).
"""

from jaxlab.supervised import nonstationary

_VARIANTS = {
    "plain4": dict(kind="plain", depth=4, layernorm=False),
    "plain8": dict(kind="plain", depth=8, layernorm=False),
    "plain12": dict(kind="plain", depth=12, layernorm=False),
    "multiskip1": dict(kind="multiskip", depth=1, layernorm=True),
    "multiskip3": dict(kind="multiskip", depth=3, layernorm=True),
    "multiskip5": dict(kind="multiskip", depth=5, layernorm=True),
    "plain12_kron": dict(kind="plain", depth=12, layernorm=False),
    # Issue 16: the arms that separate the skips from the normalisation (12-13 Linear layers
    # each, like plain12 and multiskip5).
    "plain12_ln": dict(kind="plain", depth=12, layernorm=True),
    "residual5": dict(kind="residual", depth=5, layernorm=False),
    "residual5_ln": dict(kind="residual", depth=5, layernorm=True),
    "multiskip5_noln": dict(kind="multiskip", depth=5, layernorm=False),
}


def get_config(variant: str = "plain12"):
  if variant not in _VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(_VARIANTS)}")
  c = nonstationary.default_config()
  c.data.name = "digits"
  c.data.train_size = 1280
  c.epochs = 60
  c.batch_size = 128
  c.shift_every_epochs = 10
  c.learning_rate = 1e-3
  c.network.width = 256
  c.network.trunk_out = 64
  c.network.update(_VARIANTS[variant])
  if variant.endswith("_kron"):
    c.optimizer.name = "kron"
  c.num_seeds = 2
  c.log_every = 10  # one chunk per epoch
  c.eval.every = 10
  c.checkpoint.every = 200
  return c
