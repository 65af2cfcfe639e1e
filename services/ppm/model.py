"""The process preference model: a causal-LM backbone, a linear value head and tanh.

A step's score is read at the step's last token, so one forward pass over `prompt + step_1 + … + step_k`
scores all k steps. Saved as one Hugging Face directory — the backbone's config plus a single safetensors file
that holds the backbone *and* the head — so `ProcessRewardModel.from_pretrained(dir)` is the only call needed
to serve it (the authors' scripts lost their head between training and serving).

It is initialised from a policy checkpoint: the backbone weights are the policy's (`model.*` in a causal LM's
state dict), the LM head is dropped and the value head starts near zero, so initial scores are ≈ 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

WEIGHTS = "model.safetensors"
HEAD_MARKER = "thinkmesh_ppm"


class ProcessRewardModel(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
        self.value_head = nn.Linear(config.hidden_size, 1)
        # Near-zero start: an untrained head says "no opinion" (0) rather than random confident scores.
        nn.init.normal_(self.value_head.weight, std=1e-3)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores in [-1, 1] for every position: (batch, seq_len).

        `attention_mask` is the usual 2D padding mask, or a 4D boolean mask (batch, 1, seq, seq) with explicit
        `position_ids` when a row packs several continuations of one prefix (services.ppm.packing)."""
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        return torch.tanh(self.value_head(hidden).squeeze(-1).float())

    # --- persistence -------------------------------------------------------------------------------------

    def save_pretrained(self, directory: Path | str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        # Tied embeddings share storage; safetensors wants each tensor once, contiguous.
        state = {name: tensor.detach().contiguous().clone() for name, tensor in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS), metadata={"format": "pt", "kind": HEAD_MARKER})
        (directory / "ppm.json").write_text(json.dumps({"head": "linear+tanh", "read_at": "last token of each step"}))

    @classmethod
    def from_pretrained(cls, directory: Path | str, dtype: torch.dtype = torch.float32) -> ProcessRewardModel:
        """Loads a saved PPM, or initialises one from a causal-LM (policy) checkpoint."""
        directory = Path(directory)
        config = AutoConfig.from_pretrained(directory)
        model = cls(config)
        state = _load_state(directory)
        if not any(key.startswith("value_head.") for key in state):
            # A policy checkpoint: keep the backbone, drop the LM head, keep the fresh value head.
            state = {k: v for k, v in state.items() if k.startswith("model.")}
            state.update({f"value_head.{k}": v for k, v in model.value_head.state_dict().items()})
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
        if missing or unexpected:
            raise ValueError(
                f"{directory}: weights do not fit the PPM (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return model.to(dtype)


def _load_state(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / WEIGHTS
    if single.is_file():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if index.is_file():  # sharded checkpoints of larger models
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    raise FileNotFoundError(f"{directory}: no {WEIGHTS} or sharded safetensors index")
