"""One-token decoding steps of a Qwen2 model without the framework around them, for the CPU.

On the embedded model a decoding step's arithmetic is a few small matrix products, and transformers' forward
pass wraps them in work of its own at every step (a mask built anew, a cache that grows by concatenation, a
projection per query, key and value): on a CPU that work is much of the step's time. `LeanDecoder` does the same
computation, operator for operator where it matters for the numbers (RMSNorm in fp32, rotary embedding, scaled
dot-product attention with grouped key/value heads), with the query, key and value projections in one matrix
product, the MLP's gate and up projections in another, and a key/value cache allocated once for the whole call
and written in place. The prompts are still encoded by transformers (one call, many tokens: the framework's cost
is spread); their keys and values are copied into the lean cache.

Only a plain Qwen2 (default rotary embedding, no sliding window, fp32 weights) on the CPU is decoded this way;
`LeanDecoder.of` returns None for anything else and the loop keeps transformers' forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class _Layer:
    norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    out: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class LeanDecoder:
    def __init__(self, model: Any) -> None:
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        base = model.model
        self.embed = base.embed_tokens.weight
        self.final_norm = base.norm.weight
        self.lm_head = model.lm_head.weight
        self.inv_freq = base.rotary_emb.inv_freq.float()
        self.scaling = float(getattr(base.rotary_emb, "attention_scaling", 1.0))
        self.layers = []
        for layer in base.layers:
            attention, mlp = layer.self_attn, layer.mlp
            biases = [attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias]
            self.layers.append(
                _Layer(
                    norm=layer.input_layernorm.weight,
                    qkv=torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]),
                    qkv_bias=torch.cat(biases) if all(b is not None for b in biases) else None,
                    out=attention.o_proj.weight,
                    post_norm=layer.post_attention_layernorm.weight,
                    gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                    down=mlp.down_proj.weight,
                )
            )

    @classmethod
    def of(cls, model: Any) -> LeanDecoder | None:
        """A lean decoder for `model`, or None when it is not a model this module reproduces exactly."""
        config = getattr(model, "config", None)
        rope = getattr(config, "rope_parameters", None) or {}
        if (
            config is None
            or config.model_type != "qwen2"
            or config.hidden_act != "silu"
            or getattr(config, "use_sliding_window", False)
            or rope.get("rope_type", "default") != "default"
            or next(model.parameters()).dtype != torch.float32
            or next(model.parameters()).device.type != "cpu"
        ):
            return None
        return cls(model)

    def _norm(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        variance = hidden.pow(2).mean(-1, keepdim=True)
        return weight * (hidden * torch.rsqrt(variance + self.eps))

    def start(self, hf_cache: Any, mask: torch.Tensor, room: int) -> LeanState:
        """The lean cache for rows whose prompts transformers encoded into `hf_cache` (one row per sequence, `mask`
        marking its real columns), with room for `room` new tokens."""
        rows, columns = mask.shape
        keys, values = [], []
        for layer in hf_cache.layers:
            k = layer.keys.new_zeros((rows, self.kv_heads, columns + room, self.head_dim), dtype=torch.float32)
            v = torch.zeros_like(k)
            k[:, :, :columns] = layer.keys
            v[:, :, :columns] = layer.values
            keys.append(k)
            values.append(v)
        valid = torch.zeros((rows, columns + room), dtype=torch.bool)
        valid[:, :columns] = mask.bool()
        return LeanState(keys, values, valid, columns)

    def step(self, state: LeanState, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of the next token of each row, after writing `tokens` (at `positions`) into the cache."""
        t = state.used
        state.valid[:, t] = True
        attend = state.valid[:, None, None, : t + 1]
        freqs = positions[:, None].float() * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        cos = (angles.cos() * self.scaling)[:, None, :]
        sin = (angles.sin() * self.scaling)[:, None, :]
        half = self.head_dim // 2
        hidden = F.embedding(tokens, self.embed)
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for index, layer in enumerate(self.layers):
            x = self._norm(hidden, layer.norm)
            qkv = F.linear(x, layer.qkv, layer.qkv_bias)
            q = qkv[:, :q_size].view(-1, self.heads, self.head_dim)
            k = qkv[:, q_size : q_size + kv_size].view(-1, self.kv_heads, self.head_dim)
            v = qkv[:, q_size + kv_size :].view(-1, self.kv_heads, self.head_dim)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
            state.keys[index][:, :, t] = k
            state.values[index][:, :, t] = v
            attended = F.scaled_dot_product_attention(
                q[:, :, None, :],
                state.keys[index][:, :, : t + 1],
                state.values[index][:, :, : t + 1],
                attn_mask=attend,
                enable_gqa=self.kv_heads != self.heads,
            )
            hidden = hidden + F.linear(attended.reshape(-1, q_size), layer.out)
            gate, up = F.linear(self._norm(hidden, layer.post_norm), layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + F.linear(F.silu(gate) * up, layer.down)
        state.used = t + 1
        return F.linear(self._norm(hidden, self.final_norm), self.lm_head)


@dataclass
class LeanState:
    keys: list[torch.Tensor]  # per layer [rows, kv_heads, columns, head_dim]
    values: list[torch.Tensor]
    valid: torch.Tensor  # [rows, columns]: which columns hold real tokens
    used: int  # columns written so far

    def select(self, rows: torch.Tensor) -> None:
        """Keeps only `rows` (those still decoding)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.valid = self.valid[rows]
