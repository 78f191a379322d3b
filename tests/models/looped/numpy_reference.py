"""Plain-numpy forwards of Huginn-0125 (Raven) and Ouro, written from the looped-LM spec's
equations (``specs/looped_grounding_kaleidoscope.md`` §1.4.2-1.4.3), not from our jax code.

They read the checkpoint's own tensor names and layouts (a ``{name: array}`` dict plus the
parsed ``config.json``) and compute in float64, one unpadded sequence at a time, so that a
mapping mistake in our loader (a transposed or swapped matrix, a RoPE layout, a norm in the
wrong place) shows up as a logit mismatch.
"""

from __future__ import annotations

import math

import numpy as np


def rms_norm(x, weight, eps):
  x = np.asarray(x, np.float64)
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
  return x / (1.0 + np.exp(-x))


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _angles(seq, head_dim, theta):
  inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  return np.arange(seq, dtype=np.float64)[:, None] * inv[None, :]  # [S, H/2]


def rope_adjacent_pairs(x, theta):
  """Rotates channel pairs (2i, 2i + 1) of ``x`` ``[S, N, H]`` (Huginn's complex-like RoPE)."""
  ang = _angles(x.shape[0], x.shape[-1], theta)[:, None, :]
  re, im = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = re * np.cos(ang) - im * np.sin(ang)
  out[..., 1::2] = im * np.cos(ang) + re * np.sin(ang)
  return out


def rope_rotate_half(x, theta):
  """Rotates channel pairs (i, i + H/2) of ``x`` ``[S, N, H]`` (Llama / Ouro RoPE)."""
  half = x.shape[-1] // 2
  ang = _angles(x.shape[0], x.shape[-1], theta)[:, None, :]
  a, b = x[..., :half], x[..., half:]
  return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)],
                        axis=-1)


def causal_attention(q, k, v):
  """``q`` ``[S, N, H]``, ``k, v`` ``[S, K, H]`` (query head n reads kv head n // (N / K))."""
  s, n, h = q.shape
  rep = n // k.shape[1]
  k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
  scores = np.einsum("snh,tnh->nst", q, k) / math.sqrt(h)
  scores = np.where(np.tril(np.ones((s, s), bool))[None], scores, -np.inf)
  scores = scores - scores.max(-1, keepdims=True)
  p = np.exp(scores)
  p = p / p.sum(-1, keepdims=True)
  return np.einsum("nst,tnh->snh", p, v)


# -- Huginn / Raven -------------------------------------------------------------------------------


def huginn_block(w, prefix, x, cfg):
  """Sandwich block: x <- n2(x + attn(n1(x))); x <- n4(x + mlp(n3(x)))."""
  d = cfg["n_embd"]
  n = cfg["n_heads"]
  kv = cfg.get("num_key_value_heads", n)
  h = d // n
  eps = cfg["norm_eps"]
  g = lambda name: np.asarray(w[f"{prefix}.{name}"], np.float64)

  a = rms_norm(x, g("norm_1.weight"), eps)
  qkv = a @ g("attn.Wqkv.weight").T
  q = qkv[:, :n * h].reshape(-1, n, h)
  k = qkv[:, n * h:(n + kv) * h].reshape(-1, kv, h)
  v = qkv[:, (n + kv) * h:].reshape(-1, kv, h)
  if cfg.get("qk_bias"):
    bias = g("attn.qk_bias")  # [2, 1, N, H]
    q, k = q + bias[0, 0], k + bias[1, 0]
  q, k = rope_adjacent_pairs(q, cfg["rope_base"]), rope_adjacent_pairs(k, cfg["rope_base"])
  att = causal_attention(q, k, v).reshape(-1, n * h) @ g("attn.proj.weight").T
  x = rms_norm(x + att, g("norm_2.weight"), eps)

  m = rms_norm(x, g("norm_3.weight"), eps)
  fc = m @ g("mlp.fc.weight").T
  gate, up = np.split(fc, 2, axis=-1)
  x = rms_norm(x + (silu(gate) * up) @ g("mlp.proj.weight").T, g("norm_4.weight"), eps)
  return x


def huginn_logits(w, cfg, tokens, s0, num_steps):
  """Logits ``[S, V]`` of one sequence, from the initial state ``s0`` ``[S, D]``.

  e = prelude(wte[x] * embed_scale); s_t = core(adapter [s_{t-1}; e]); then
  ln_f, coda, ln_f, head (the embedding when tied).
  """
  t = "transformer"
  eps = cfg["norm_eps"]
  x = np.asarray(w[f"{t}.wte.weight"], np.float64)[tokens] * cfg["init_values"]["embed_scale"]
  for i in range(cfg["n_layers_in_prelude"]):
    x = huginn_block(w, f"{t}.prelude.{i}", x, cfg)
  e = x
  s = np.asarray(s0, np.float64)
  adapter = np.asarray(w[f"{t}.adapter.weight"], np.float64)
  for _ in range(num_steps):
    s = np.concatenate([s, e], axis=-1) @ adapter.T
    for i in range(cfg["n_layers_in_recurrent_block"]):
      s = huginn_block(w, f"{t}.core_block.{i}", s, cfg)
  ln_f = np.asarray(w[f"{t}.ln_f.weight"], np.float64)
  x = rms_norm(s, ln_f, eps)
  for i in range(cfg["n_layers_in_coda"]):
    x = huginn_block(w, f"{t}.coda.{i}", x, cfg)
  x = rms_norm(x, ln_f, eps)
  head = w[f"{t}.wte.weight"] if cfg["tie_embeddings"] else w["lm_head.weight"]
  return x @ np.asarray(head, np.float64).T


# -- Ouro -----------------------------------------------------------------------------------------


def ouro_layer(w, prefix, x, cfg):
  """x <- x + n_in2(attn(n_in(x))); x <- x + n_post2(mlp(n_post(x)))."""
  d, n = cfg["hidden_size"], cfg["num_attention_heads"]
  kv = cfg.get("num_key_value_heads", n)
  h = cfg.get("head_dim") or d // n
  eps = cfg["rms_norm_eps"]
  theta = cfg.get("rope_theta", 10000.0)
  g = lambda name: np.asarray(w[f"{prefix}.{name}"], np.float64)

  a = rms_norm(x, g("input_layernorm.weight"), eps)
  q = (a @ g("self_attn.q_proj.weight").T).reshape(-1, n, h)
  k = (a @ g("self_attn.k_proj.weight").T).reshape(-1, kv, h)
  v = (a @ g("self_attn.v_proj.weight").T).reshape(-1, kv, h)
  q, k = rope_rotate_half(q, theta), rope_rotate_half(k, theta)
  att = causal_attention(q, k, v).reshape(-1, n * h) @ g("self_attn.o_proj.weight").T
  x = x + rms_norm(att, g("input_layernorm_2.weight"), eps)

  m = rms_norm(x, g("post_attention_layernorm.weight"), eps)
  mlp = (silu(m @ g("mlp.gate_proj.weight").T) * (m @ g("mlp.up_proj.weight").T)
         ) @ g("mlp.down_proj.weight").T
  return x + rms_norm(mlp, g("post_attention_layernorm_2.weight"), eps)


def ouro_steps(w, cfg, tokens, num_steps):
  """Per pass: ``(logits [T, S, V], exit lambdas [T, S])``.

  x_0 = embed(x); each pass runs every layer then the final norm, whose output is both the
  next pass's input and the pass's readout (head) and gate input.
  """
  x = np.asarray(w["model.embed_tokens.weight"], np.float64)[tokens]
  norm = np.asarray(w["model.norm.weight"], np.float64)
  gate_w = np.asarray(w["model.early_exit_gate.weight"], np.float64)  # [1, D]
  gate_b = np.asarray(w["model.early_exit_gate.bias"], np.float64)  # [1]
  head = (w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings")
          else w["lm_head.weight"])
  head = np.asarray(head, np.float64)
  logits, lambdas = [], []
  for _ in range(num_steps):
    for i in range(cfg["num_hidden_layers"]):
      x = ouro_layer(w, f"model.layers.{i}", x, cfg)
    x = rms_norm(x, norm, cfg["rms_norm_eps"])
    logits.append(x @ head.T)
    lambdas.append(sigmoid(x @ gate_w.T + gate_b)[:, 0])
  return np.stack(logits), np.stack(lambdas)


def exit_pdf(lambdas):
  """p(t) = lambda_t prod_{j<t} (1 - lambda_j), the last step taking the remaining mass."""
  t = lambdas.shape[0]
  p = np.zeros_like(lambdas)
  survive = np.ones_like(lambdas[0])
  for i in range(t):
    p[i] = survive if i == t - 1 else lambdas[i] * survive
    survive = survive * (1 - lambdas[i])
  return p
