"""Supervised benchmarks of plasticity: non-stationary classification (spec rl.md §2.1, §7.1).

* ``data``: CIFAR-10 (local python-version batches) and scikit-learn's digits (offline).
* ``nonstationary``: the trainer "ns_supervised" (labels re-permuted every E epochs, arms such as
  SIGReg weights and learning rates trained side by side in one program).
"""
