"""The process preference model: a causal-LM backbone, a linear value head and tanh.

A step's score is read at the step's last token, so one forward pass over `prompt + step_1 + … + step_k`
scores all k steps. Saved as one Hugging Face directory — the backbone's config plus a single safetensors file
that holds the backbone *and* the head — so `ProcessRewardModel.from_pretrained(dir)` is the only call needed
to serve it (the authors' scripts lost their head between training and serving).

It is initialised from a policy checkpoint: the backbone weights are the policy's (`model.*` in a causal LM's
state dict) and the value head starts near zero.

**The path's likelihood** (`likelihood=True`, the default for new PPMs). A PPM initialised from the policy also
keeps the policy's LM head, and a step's score reads both the value head and the mean log-probability the model
gives the tokens the policy wrote on the way to that step (the prompt and the search's `<output>` blocks do not
count):  score = tanh(value_head(h) + w · mean_logprob), with w learnt. On this repository's curriculum the
policy's own likelihood ranks held-out search-tree pairs at 0.70–0.73 before any PPM training, where a value
head alone, trained on them, reached 0.52–0.56 (docs/results.md): a small PPM keeps what its policy knows
about its own mistakes instead of having to learn it again from a few hundred pairs. Which tokens count is
the caller's to say (`counted`); each token's log-probability is read at the latest earlier position on its
own path, so rows that pack several continuations of one prefix (services.ppm.packing) read them correctly.
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
DESCRIPTION = "ppm.json"
# The likelihood term's starting weight, and the value head's starting bias that centres it: the policy's own
# steps average about -0.3 nats a token on the curriculum, so scores start near 0 (the Bradley-Terry loss's
# centring term keeps them there; both are learnt).
INITIAL_LIKELIHOOD_WEIGHT = 5.0
TYPICAL_MEAN_LOGPROB = -0.3


class ProcessRewardModel(nn.Module):
    def __init__(self, config: PretrainedConfig, *, likelihood: bool = False) -> None:
        super().__init__()
        self.config = config
        self.likelihood = likelihood
        self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
        self.value_head = nn.Linear(config.hidden_size, 1)
        # Near-zero start: an untrained head says "no opinion" (0) rather than random confident scores; with the
        # likelihood term, its bias centres that term instead.
        nn.init.normal_(self.value_head.weight, std=1e-3)
        nn.init.constant_(
            self.value_head.bias, -INITIAL_LIKELIHOOD_WEIGHT * TYPICAL_MEAN_LOGPROB if likelihood else 0.0
        )
        if likelihood:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            if getattr(config, "tie_word_embeddings", False):
                self.lm_head.weight = self.model.get_input_embeddings().weight
            self.likelihood_weight = nn.Parameter(torch.tensor(INITIAL_LIKELIHOOD_WEIGHT))

    @property
    def _no_split_modules(self) -> list[str]:
        """The backbone's decoder layers: what FSDP shards as one unit each (Accelerate reads this name)."""
        return list(getattr(self.model, "_no_split_modules", None) or [])

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, object] | None = None) -> None:
        """Recompute the backbone's activations in the backward pass (the Trainer calls this by name)."""
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        counted: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores in [-1, 1] for every position: (batch, seq_len).

        `attention_mask` is the usual 2D padding mask, or a 4D boolean mask (batch, 1, seq, seq) with explicit
        `position_ids` when a row packs several continuations of one prefix (services.ppm.packing). A likelihood
        PPM also needs `counted` (batch, seq_len, bool): the tokens the policy wrote."""
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        logits = self.value_head(hidden).squeeze(-1).float()
        if self.likelihood:
            if counted is None:
                raise ValueError("this PPM reads the path's likelihood: say which tokens count (`counted`)")
            paths = _paths(attention_mask, input_ids)
            logits = logits + self.likelihood_weight * self._mean_logprob(hidden, input_ids, paths, counted)
        return torch.tanh(logits)

    def _mean_logprob(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, paths: torch.Tensor, counted: torch.Tensor
    ) -> torch.Tensor:
        """For every position, the mean log-probability of the counted tokens on its path (0 where none)."""
        width = input_ids.shape[1]
        earlier = paths & ~torch.eye(width, dtype=torch.bool, device=paths.device)
        index = torch.arange(width, device=paths.device)
        # A token is predicted at the latest earlier position on its own path: the one before it, or for the
        # first token of a packed continuation, the prefix's last token.
        predecessor = torch.where(earlier, index, -1).amax(-1)
        wanted = counted & (predecessor >= 0)
        rows, columns = wanted.nonzero(as_tuple=True)
        token_logprob = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        if len(rows):  # the LM head only where it is needed: a real model's vocabulary is large
            logprobs = self.lm_head(hidden[rows, predecessor[rows, columns]]).float().log_softmax(-1)
            token_logprob[rows, columns] = logprobs.gather(1, input_ids[rows, columns, None]).squeeze(1)
        on_path = paths.float()
        total = torch.bmm(on_path, token_logprob.unsqueeze(-1)).squeeze(-1)
        count = torch.bmm(on_path, wanted.float().unsqueeze(-1)).squeeze(-1)
        return total / count.clamp(min=1)

    # --- persistence -------------------------------------------------------------------------------------

    def save_pretrained(self, directory: Path | str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes the PPM; `state_dict`: its weights gathered elsewhere (a sharded model's), else its own."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        # Tied embeddings share storage; safetensors wants each tensor once, contiguous.
        weights = self.state_dict() if state_dict is None else state_dict
        state = {name: tensor.detach().contiguous().clone() for name, tensor in weights.items()}
        save_file(state, str(directory / WEIGHTS), metadata={"format": "pt", "kind": HEAD_MARKER})
        description = {"head": "linear+tanh", "read_at": "last token of each step", "likelihood": self.likelihood}
        (directory / DESCRIPTION).write_text(json.dumps(description))

    @classmethod
    def from_pretrained(
        cls, directory: Path | str, dtype: torch.dtype = torch.float32, *, likelihood: bool = True
    ) -> ProcessRewardModel:
        """Loads a saved PPM (its own description says whether it reads the likelihood), or initialises one from
        a causal-LM (policy) checkpoint, with the likelihood term unless `likelihood=False`."""
        directory = Path(directory)
        config = AutoConfig.from_pretrained(directory)
        state = _load_state(directory)
        saved_ppm = any(key.startswith("value_head.") for key in state)
        if saved_ppm:
            likelihood = reads_likelihood(directory)
        model = cls(config, likelihood=likelihood)
        if not saved_ppm:
            # A policy checkpoint: the backbone, the LM head when the likelihood is read, a fresh value head.
            kept = ("model.", "lm_head.") if likelihood else ("model.",)
            state = {k: v for k, v in state.items() if k.startswith(kept)}
            fresh = {k: v for k, v in model.state_dict().items() if not k.startswith(("model.", "lm_head."))}
            state.update(fresh)
        tied = likelihood and getattr(config, "tie_word_embeddings", False)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # A tied LM head is the embedding matrix itself (tied checkpoints often leave it out).
        missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq") and not (tied and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(
                f"{directory}: weights do not fit the PPM (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return model.to(dtype)


def reads_likelihood(directory: Path | str) -> bool:
    """Whether the PPM saved in `directory` reads the path's likelihood, as its ppm.json says (PPMs saved before
    the likelihood term have no such key: they are value heads alone)."""
    description = Path(directory) / DESCRIPTION
    return bool(description.is_file() and json.loads(description.read_text()).get("likelihood"))


def _paths(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, seq, seq) bool: which tokens lie on each position's path, i.e. what it attends to."""
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask[:, 0].bool()
    batch, width = input_ids.shape
    causal = torch.ones((width, width), dtype=torch.bool, device=input_ids.device).tril().expand(batch, width, width)
    if attention_mask is None:
        return causal
    present = attention_mask.bool()
    return causal & present[:, None, :] & present[:, :, None]


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
