"""Fixtures of the model-family tests: tiny random HF checkpoints and exact float32 matmuls."""

from tests.models.decoder.tiny_hf import exact_float32_matmuls, hf_dirs  # noqa: F401
