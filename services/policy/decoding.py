"""A sampling loop for one batch of step prompts, n candidates each, that does only the work the search needs.

transformers' `generate()` would encode each prompt n times (`num_return_sequences` repeats the rows before
the forward pass) and keep computing every row until the longest candidate ends. A search tick sends dozens
of prompts of 100–300 tokens, each for n candidate steps of 10–40 tokens, so on a CPU both costs dominate:
this loop encodes each prompt once, copies its key/value cache once per candidate, and drops a row from the
batch as soon as its candidate draws a stop token. It needs stop markers that are single tokens (the embedded
models'); otherwise the engine falls back to `generate()` with stop strings.

Sampling is the same as `generate()`'s: temperature, then nucleus (top-p) filtering, then one multinomial draw;
a temperature of 0 is greedy. Each token's log-probability is taken from the filtered distribution it was drawn
from (what `compute_transition_scores(normalize_logits=True)` reports).

A batch may serve several callers (services.common.batching). Between tokens the loop asks whether each row's
caller still waits (`alive`): the rows of a caller who went away or ran out of time leave the batch like finished
ones, and the loop ends when no row is left, so an abandoned request costs at most the step in progress.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from services.policy.lean import LeanDecoder
from services.policy.prefix_cache import PrefixCache


@dataclass(frozen=True)
class Sampled:
    token_ids: list[int]  # up to and including the stop token, if one was drawn
    logprob: float  # sum over token_ids


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Scaled by temperature, with the tokens outside the top-p nucleus set to -inf (at least one kept)."""
    scaled = logits / temperature
    if top_p >= 1.0:
        return scaled
    ordered, order = torch.sort(scaled, dim=-1, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    outside = cumulative <= 1 - top_p
    outside[..., -1] = False  # the most likely token always stays
    return scaled.masked_fill(outside.scatter(-1, order, outside), float("-inf"))


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers ≥ 5.24 names the key/value cache `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _draw(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-probability."""
    if temperature <= 0:
        logprobs = logits.log_softmax(dim=-1)
        tokens = logprobs.argmax(dim=-1)
    else:
        logprobs = filter_logits(logits, temperature, top_p).log_softmax(dim=-1)
        tokens = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(1)
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


@dataclass
class Prefilled:
    """Prompts encoded: the model's key/value cache (one row per prompt), each prompt's next-token logits, which
    cache columns hold real tokens, and the position of each prompt's next token."""

    cache: Any
    logits: torch.Tensor  # [prompts, vocab], fp32
    mask: torch.Tensor  # [prompts, columns]
    next_position: torch.Tensor  # [prompts]


def prefill(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, bf16_on_cpu: bool = False
) -> Prefilled:
    """Left-padded prompts encoded whole. Positions count real tokens only, so a padded row reads exactly as it
    would alone."""
    positions = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_on_cpu):
        output = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
    return Prefilled(
        getattr(output, _cache_argument(model)), output.logits[:, -1, :].float(), attention_mask, attention_mask.sum(-1)
    )


def prefill_cached(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    cache: PrefixCache,
    *,
    pad_id: int,
    device: torch.device,
    bf16_on_cpu: bool = False,
) -> Prefilled:
    """The prompts encoded from the longest prefix each has in `cache` on (services/policy/prefix_cache.py), and
    each prompt's keys and values put in the cache for the prompts that will start with it.

    Row i's columns: the cached prefix right-aligned in the first block, then its new tokens right-aligned in the
    second, padding masked out in both; positions continue from the prefix, so the row reads as if encoded whole.
    """
    found = [cache.longest(ids) for ids in prompts]
    past = max(length for length, _ in found)
    news = [list(ids[length:]) for ids, (length, _) in zip(prompts, found, strict=True)]
    width = max(len(new) for new in news)
    rows = len(prompts)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, past + width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    for row, (new, (length, _)) in enumerate(zip(news, found, strict=True)):
        input_ids[row, width - len(new) :] = torch.tensor(new)
        positions[row, width - len(new) :] = torch.arange(length, length + len(new))
        mask[row, past - length : past] = 1
        mask[row, past + width - len(new) :] = 1
    seeded: Any = None
    if past:
        template = next(layers for _, layers in found if layers is not None)
        columns = []
        for layer, (keys, values) in enumerate(template):
            shape = (rows, keys.shape[0], past, keys.shape[2])
            past_keys, past_values = keys.new_zeros(shape), values.new_zeros(shape)
            for row, (length, layers) in enumerate(found):
                if layers is not None:
                    past_keys[row, :, past - length :] = layers[layer][0]
                    past_values[row, :, past - length :] = layers[layer][1]
            columns.append((past_keys.to(device), past_values.to(device)))
        seeded = DynamicCache(ddp_cache_data=columns)
    mask = mask.to(device)
    name = _cache_argument(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_on_cpu):
        output = model(
            input_ids=input_ids.to(device),
            attention_mask=mask,
            position_ids=positions.to(device),
            use_cache=True,
            logits_to_keep=1,
            **({name: seeded} if seeded is not None else {}),
        )
    encoded: Any = getattr(output, name)
    for row, ids in enumerate(prompts):
        real = mask[row].bool()
        cache.put(
            ids,
            tuple((layer.keys[row][:, real].clone(), layer.values[row][:, real].clone()) for layer in encoded.layers),
        )
    return Prefilled(encoded, output.logits[:, -1, :].float(), mask, mask.sum(-1))


def sample_candidates(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    counts: Sequence[int],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    bf16_prefill_on_cpu: bool = False,
    owners: Sequence[int] = (),
    alive: Callable[[int], bool] | None = None,
) -> list[Sampled]:
    """counts[i] sampled continuations of left-padded prompt row i, in row order (a prompt's in a row).

    `owners` names, for each of those sum(counts) rows, the request it serves (0, 1, …), and `alive(owner)` says
    whether that request's caller still waits; its rows are dropped as soon as it does not, keeping the tokens
    they had. Without `alive` every row runs until its stop token or the budget.

    Call under `torch.inference_mode()`. `bf16_prefill_on_cpu` encodes the prompts under bf16 autocast: on CPUs
    with bf16 matrix units that is faster for the prompts' long sequences, while the one-token steps after it are
    faster in fp32 (docs/benchmarks.md). The prompts' bf16 keys and values become fp32 at the first step's
    concatenation.
    """
    return sample_from(
        model,
        lambda: prefill(model, input_ids, attention_mask, bf16_prefill_on_cpu),
        counts=counts,
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        temperature=temperature,
        top_p=top_p,
        generator=generator,
        owners=owners,
        alive=alive,
        device=input_ids.device,
    )


def sample_from(
    model: torch.nn.Module,
    encode: Callable[[], Prefilled],
    *,
    counts: Sequence[int],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    owners: Sequence[int] = (),
    alive: Callable[[int], bool] | None = None,
    device: torch.device,
    lean: LeanDecoder | None = None,
) -> list[Sampled]:
    """`sample_candidates` from prompts that `encode` encodes (called only if some caller still waits); the
    one-token steps through `lean` when given (services/policy/lean.py), else through the model's forward pass."""
    rows = sum(counts)
    wanted = wanted_rows(rows, owners, alive, device)
    if not bool(wanted().any()):
        return [Sampled([], 0.0) for _ in range(rows)]
    encoded = encode()
    cache_name = _cache_argument(model)
    cache: Any = encoded.cache
    # Each prompt's cache and last logits, copied once per candidate.
    copies = torch.repeat_interleave(torch.tensor(list(counts), device=device))
    cache.batch_select_indices(copies)
    logits = encoded.logits[copies]
    mask = encoded.mask[copies]
    next_position = encoded.next_position[copies]
    state = lean.start(cache, mask, max_new_tokens) if lean is not None else None

    token_ids: list[list[int]] = [[] for _ in range(rows)]
    logprobs = [0.0] * rows
    live = torch.arange(rows, device=device)  # the original row of each row still in the batch
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tokens, token_logprobs = _draw(logits, temperature, top_p, generator)
        for row, token, logprob in zip(live.tolist(), tokens.tolist(), token_logprobs.tolist(), strict=True):
            token_ids[row].append(token)
            logprobs[row] += logprob
        going_on = ~torch.isin(tokens, stops) & wanted()[live]
        if step == max_new_tokens - 1 or not bool(going_on.any()):
            break
        if not bool(going_on.all()):
            keep = going_on.nonzero().squeeze(1)
            if state is not None:
                state.select(keep)
            else:
                cache.batch_select_indices(keep)
            live, tokens, mask, next_position = live[keep], tokens[keep], mask[keep], next_position[keep]
        if lean is not None and state is not None:
            logits = lean.step(state, tokens, next_position)
            next_position = next_position + 1
            continue
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        output = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **{cache_name: cache},
        )
        next_position = next_position + 1
        logits = output.logits[:, -1, :].float()
    return [Sampled(ids, logprob) for ids, logprob in zip(token_ids, logprobs, strict=True)]


def wanted_rows(
    rows: int, owners: Sequence[int], alive: Callable[[int], bool] | None, device: torch.device
) -> Callable[[], torch.Tensor]:
    """A function that tells, for each of the batch's original rows, whether its caller still waits."""
    everyone = torch.ones(rows, dtype=torch.bool, device=device)
    if alive is None:
        return lambda: everyone
    if len(owners) != rows:
        raise ValueError(f"owners names {len(owners)} rows; the batch has {rows}")
    owner_of_row = torch.tensor(list(owners), dtype=torch.long, device=device)
    requests = max(owners, default=-1) + 1

    def wanted() -> torch.Tensor:
        per_request = [alive(owner) for owner in range(requests)]
        return torch.tensor(per_request, dtype=torch.bool, device=device)[owner_of_row]

    return wanted
