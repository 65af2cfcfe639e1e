"""Training the process preference model on step pairs with the Bradley–Terry loss.

A pair shares a prefix (question + earlier steps) and differs in the next step: `chosen` led to a correct
answer with high Q, `rejected` to a wrong one with low Q (the paper's rule; see services/trainer/pairs.py for
how pairs are drawn from search trees). The loss is −log σ(r_chosen − r_rejected), with r read at each
candidate step's last token. Regressing on Q values directly works worse because Q is noisy (paper, Table 8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Trainer

from services.ppm.model import ProcessRewardModel
from services.ppm.scorer import ScoreItem, encode_item
from services.trainer.sft import pad_id_of, run_trainer


@dataclass(frozen=True)
class StepPair:
    question: str
    prefix: tuple[str, ...]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PPMConfig:
    max_steps: int = 400
    batch_size: int = 16  # pairs per optimizer step
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_length: int = 768
    seed: int = 0


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: StepPair, max_length: int) -> dict[str, Any]:
    chosen, chosen_at = encode_item(tokenizer, ScoreItem(pair.question, (*pair.prefix, pair.chosen)), max_length)
    rejected, rejected_at = encode_item(tokenizer, ScoreItem(pair.question, (*pair.prefix, pair.rejected)), max_length)
    return {"chosen": chosen, "chosen_at": chosen_at[-1], "rejected": rejected, "rejected_at": rejected_at[-1]}


class PairCollator:
    """Stacks chosen rows then rejected rows into one right-padded batch."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        positions = [f["chosen_at"] for f in features] + [f["rejected_at"] for f in features]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row)
            mask[index, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask, "positions": torch.tensor(positions)}


def pair_scores(model: ProcessRewardModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    per_token = model(batch["input_ids"], batch["attention_mask"])
    scores = per_token[torch.arange(per_token.shape[0], device=per_token.device), batch["positions"]]
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


class BradleyTerryTrainer(Trainer):
    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        chosen, rejected = pair_scores(model, inputs)
        loss = -F.logsigmoid(chosen - rejected).mean()
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss


def train_ppm(
    model: ProcessRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[StepPair],
    config: PPMConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    if not pairs:
        raise ValueError("no pairs to train on")
    dataset = [encode_pair(tokenizer, pair, config.max_length) for pair in pairs]
    collator = PairCollator(pad_id_of(tokenizer))
    return run_trainer(
        BradleyTerryTrainer, model, dataset, collator, config, progress=progress, name="ppm", on_step=on_step
    )


@torch.inference_mode()
def pairwise_accuracy(
    model: ProcessRewardModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[StepPair], batch_size: int = 32
) -> float:
    """Share of pairs whose chosen step scores above the rejected one."""
    if not pairs:
        return float("nan")
    model.eval()
    collate = PairCollator(pad_id_of(tokenizer))
    device = next(model.parameters()).device
    wins = 0
    for start in range(0, len(pairs), batch_size):
        chunk = [encode_pair(tokenizer, pair, 100_000) for pair in pairs[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        chosen, rejected = pair_scores(model, batch)
        wins += int((chosen > rejected).sum())
    return wins / len(pairs)
