"""Qwen2.5-VL: vision tower, merger, M-RoPE and the image processor."""
