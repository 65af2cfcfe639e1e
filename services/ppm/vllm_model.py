"""The PPM as a vLLM pooling model: vLLM's Qwen2 backbone, the PPM's LM head and its value head.

vLLM loads this class by name inside its own processes (the engine arguments' `model_class_overrides`, see
services/ppm/vllm_scorer.py), so nothing here runs where vLLM is not installed and vLLM is imported only when the
model is built. The saved PPM directory (services/ppm/model.py: one model.safetensors with `model.*`, `lm_head.*`,
`value_head.*` and `likelihood_weight`) loads as it is.

The pooler answers vLLM's `token_classify` task with two numbers per token t of the prompt:

    [value_head(h_t),  w · log p(token_t | tokens before t)]

the second where the request's `extra_kwargs["counted"]` lists t (the tokens the policy wrote, as the scorer says;
every position but the first when it says nothing, as vLLM's warm-up run does) and 0 elsewhere, with w the
PPM's learnt likelihood weight (0 for a PPM that reads no likelihood). A step's score is then assembled from
these by the scorer (services/ppm/vllm_scorer.py `assemble_scores`): tanh(value at the step's last token + the
mean of the second column over the counted tokens up to it), which is `ProcessRewardModel.forward`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURE = "ThinkmeshPPMForVLLM"
# The engine arguments' hf_overrides key that says whether the PPM reads the path's likelihood (its ppm.json).
LIKELIHOOD_KEY = "thinkmesh_ppm_likelihood"
# Rows of the LM head computed at once: a real vocabulary (151,936 for Qwen2.5) makes each row 0.6 MB of fp32
# logits, so 256 rows bound the pooler's extra memory to about 150 MB whatever the batch.
LM_HEAD_ROWS = 256


class ThinkmeshPPMForVLLM(nn.Module):
    # What vLLM's registry reads of a pooling model (vllm.model_executor.models.interfaces_base).
    is_pooling_model: ClassVar[bool] = True
    default_seq_pooling_type: ClassVar[str] = "LAST"
    default_tok_pooling_type: ClassVar[str] = "ALL"
    # vLLM's fused projections, as in its Qwen2 models.
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        from vllm.model_executor.layers.logits_processor import LogitsProcessor
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
        from vllm.model_executor.models.qwen2 import Qwen2Model
        from vllm.model_executor.models.utils import maybe_prefix

        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.likelihood = bool(getattr(config, LIKELIHOOD_KEY, False))
        self.model = Qwen2Model(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.value_head = nn.Linear(config.hidden_size, 1)
        if self.likelihood:
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.hidden_size,
                quant_config=vllm_config.quant_config,
                prefix=maybe_prefix(prefix, "lm_head"),
            )
            if getattr(config, "tie_word_embeddings", False):
                self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
            self.logits_processor = LogitsProcessor(config.vocab_size)
            self.likelihood_weight = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.pooler = _PPMPooler(self._per_token)
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)  # type: ignore[no-any-return]

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> Any:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        from vllm.model_executor.models.utils import AutoWeightsLoader

        # A value head alone has no LM head nor likelihood weight: a checkpoint's (if any) are not read.
        ignored = [] if self.likelihood else ["lm_head.", "likelihood_weight"]
        loaded: set[str] = AutoWeightsLoader(self, ignore_unexpected_prefixes=ignored).load_weights(weights)
        return loaded

    def _per_token(self, hidden: torch.Tensor, token_ids: torch.Tensor, counted: list[int] | None) -> torch.Tensor:
        """(tokens, 2) float32: each token's value and w · its log-probability where it counts (see the module doc)."""
        value = F.linear(hidden.float(), self.value_head.weight.float(), self.value_head.bias.float()).squeeze(-1)
        weighted = torch.zeros_like(value)
        if self.likelihood:
            # Token t is predicted at position t - 1 (a request is one path: no packing here).
            wanted = torch.arange(1, len(token_ids)) if counted is None else torch.tensor(counted, dtype=torch.long)
            targets = token_ids[wanted].to(device=hidden.device, dtype=torch.long)
            wanted = wanted.to(hidden.device)
            weight = self.likelihood_weight.float()
            for start in range(0, len(wanted), LM_HEAD_ROWS):
                rows = wanted[start : start + LM_HEAD_ROWS]
                logits = self.logits_processor(self.lm_head, hidden[rows - 1])
                if logits is None:  # a tensor-parallel rank but the first, where vLLM gathers the logits
                    break
                chosen = targets[start : start + LM_HEAD_ROWS, None]
                weighted[rows] = weight * logits.float().log_softmax(-1).gather(1, chosen).squeeze(1)
        return torch.stack([value, weighted], dim=-1)


class _PPMPooler(nn.Module):
    """vLLM's pooler interface for the `token_classify` task: every token's hidden state (vLLM's ALL pooling,
    which also collects a chunked prefill's chunks) and the prompt's token ids, to `per_token`."""

    def __init__(self, per_token: Any) -> None:
        from vllm.model_executor.layers.pooler.tokwise import AllPool

        super().__init__()
        self.pooling = AllPool()
        self._per_token = per_token

    def get_supported_tasks(self) -> set[str]:
        return {"token_classify"}

    def get_pooling_updates(self, task: str) -> Any:
        from vllm.model_executor.layers.pooler import PoolingParamsUpdate

        return PoolingParamsUpdate(requires_token_ids=True)

    def forward(self, hidden_states: torch.Tensor, pooling_metadata: Any) -> list[torch.Tensor | None]:
        pooled = self.pooling(hidden_states, pooling_metadata)
        token_ids = pooling_metadata.get_prompt_token_ids_cpu()  # vLLM sets only the CPU copy for requests
        outputs: list[torch.Tensor | None] = []
        for hidden, ids, params in zip(pooled, token_ids, pooling_metadata.pooling_params, strict=True):
            if hidden is None:  # a chunked prefill not finished yet
                outputs.append(None)
                continue
            counted = (params.extra_kwargs or {}).get("counted")
            outputs.append(self._per_token(hidden, ids, counted))
        return outputs
