"""Per-round reports: `rounds/<n>/report.json`, one Markdown table over all rounds (`rounds/report.md`, round 0
first, accuracy as the first number column) and a plot of accuracy by round (`rounds/progress.png`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.common.jsonfiles import write_json
from services.trainer.rounds.paired import summary
from services.trainer.rounds.state import Rounds, RoundState

COLUMNS = (
    ("MCTS acc", "mcts_accuracy"),
    ("greedy", "greedy_accuracy"),
    ("maj@N", "maj_accuracy"),
    ("best-of-N (PPM)", "bon_accuracy"),
    ("PPM pair acc", "ppm_pair_accuracy"),
    ("held-out pairs", "heldout_pairs"),
    ("pool solved", "pool_solved"),
    ("frontier level", "frontier_level"),
    ("frontier pass@k", "frontier_pass_at_k"),
    ("frontier MCTS", "frontier_mcts_accuracy"),
)


# Problem by problem against the round before (pooled over the levels; the per-level table follows).
PAIRED_COLUMNS = (("greedy vs previous", "paired_previous/greedy"), ("MCTS vs previous", "paired_previous/mcts"))


def _value(metrics: dict[str, Any], key: str) -> Any:
    if key.startswith("paired_"):
        name, method = key.split("/")
        return summary(metrics.get(name) or {}, method)
    return metrics.get(key)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# Shown when the rounds judged their solutions clean (`number_rule`): what the SFT left out, and why.
CLEAN_COLUMNS = (
    ("SFT trajectories", "sft_trajectories"),
    ("dropped: foreign number", "sft_dropped_foreign_number"),
    ("dropped: code error", "sft_dropped_code_error"),
    ("lone solutions", "lone_solutions"),
)
# Shown only when some round searched its unsolved problems again (`unsolved_retries`).
RETRY_COLUMNS = (("retried", "retried"), ("solved by retries", "solved_by_retries"))
# Shown only when some round searched the problems its first search solved sometimes again (`frontier_retries`).
FRONTIER_COLUMNS = (("searched again (frontier)", "frontier_searched"),)
# Shown only when some round's searches failed after their retries (the round went on without them).
FAILED_COLUMNS = (("searches failed", "search_failed"),)
# Shown only when some round left training examples out for their length (over the preset's max_length).
DROPPED_COLUMNS = (("SFT dropped (long)", "sft_dropped_long"), ("PPM pairs dropped (long)", "ppm_dropped_long"))
# Shown only when some round trained on several processes (torchrun, a Kubernetes Job): how, and how fast. The
# stages' logs are in rounds/<n>/train/<stage>/logs/.
TRAINING_COLUMNS = (
    ("SFT ranks", "sft_world_size"),
    ("SFT tokens/s", "sft_tokens_per_s"),
    ("PPM ranks", "ppm_world_size"),
    ("PPM tokens/s", "ppm_tokens_per_s"),
)


def markdown_table(states: list[RoundState]) -> str:
    columns: tuple[tuple[str, str], ...] = COLUMNS
    if any("retried" in s.metrics for s in states):
        solved_at = [key for _, key in COLUMNS].index("pool_solved") + 1
        columns = (*COLUMNS[:solved_at], *RETRY_COLUMNS, *COLUMNS[solved_at:])
    if any("frontier_searched" in s.metrics for s in states):
        solved_at = [key for _, key in columns].index("pool_solved") + 1
        columns = (*columns[:solved_at], *FRONTIER_COLUMNS, *columns[solved_at:])
    if any("sft_dropped_foreign_number" in s.metrics for s in states):
        solved_at = [key for _, key in columns].index("pool_solved") + 1
        columns = (*columns[:solved_at], *CLEAN_COLUMNS, *columns[solved_at:])
    if any("paired_previous" in s.metrics for s in states):
        columns = (*columns, *PAIRED_COLUMNS)
    if any(s.metrics.get(key) for s in states for _, key in FAILED_COLUMNS):
        columns = (*columns, *FAILED_COLUMNS)
    if any(s.metrics.get(key) for s in states for _, key in DROPPED_COLUMNS):
        columns = (*columns, *DROPPED_COLUMNS)
    if any((s.metrics.get(key) or 0) > 1 for s in states for key in ("sft_world_size", "ppm_world_size")):
        columns = (*columns, *TRAINING_COLUMNS)
    header = "| round | " + " | ".join(name for name, _ in columns) + " | policy | ppm | state |"
    rule = "|---" * (len(columns) + 4) + "|"
    rows = [
        f"| {s.round} | "
        + " | ".join(_cell(_value(s.metrics, key)) for _, key in columns)
        + f" | {s.policy_version} | {s.ppm_version} | {s.state} |"
        for s in states
    ]
    return "\n".join([header, rule, *rows]) + "\n"


def per_level_table(states: list[RoundState]) -> str:
    """Greedy and MCTS accuracy by level, each against the round before problem by problem ("" when no round
    reports levels)."""
    levels = sorted(
        {key.rsplit("_", 1)[1] for s in states for key in (s.metrics.get("per_level") or {}) if "_L" in key},
        key=lambda level: int(level[1:]) if level[1:].isdigit() else 0,
    )
    if not levels:
        return ""
    lines = [
        "",
        "| round | level | greedy | greedy vs previous | MCTS | MCTS vs previous |",
        "|---|---|---|---|---|---|",
    ]
    for s in states:
        per_level = s.metrics.get("per_level") or {}
        before = s.metrics.get("paired_previous") or {}
        for level in levels:
            lines.append(
                f"| {s.round} | {level} | {_cell(per_level.get(f'greedy_{level}'))} | "
                f"{summary(before, 'greedy', level)} | {_cell(per_level.get(f'mcts_{level}'))} | "
                f"{summary(before, 'mcts', level)} |"
            )
    return "\n".join(lines) + "\n"


def plot(states: list[RoundState], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    rounds = [s.round for s in states]
    levels = sorted({key.rsplit("_", 1)[1] for s in states for key in (s.metrics.get("per_level") or {})})
    if levels:  # greedy and MCTS per level: the rounds' gains are a level's, and the levels differ tenfold
        for level in levels:
            for method, style in (("greedy", "--"), ("mcts", "-")):
                values = [(s.metrics.get("per_level") or {}).get(f"{method}_{level}") for s in states]
                if all(v is None for v in values):
                    continue  # a method not run on this level (MCTS on level 4 by default) has no line, not zeros
                label = f"{'MCTS' if method == 'mcts' else method}, {level}"
                points = [float("nan") if v is None else v for v in values]
                axis.plot(rounds, points, style, marker="o", label=label)
        ylabel = "held-out accuracy by level"
    else:
        for label, key in COLUMNS[:4]:
            axis.plot(rounds, [s.metrics.get(key) or 0.0 for s in states], marker="o", label=label)
        ylabel = "held-out accuracy"
    axis.set_xlabel("round")
    axis.set_ylabel(ylabel)
    axis.set_xticks(rounds)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(rounds: Rounds, state: RoundState) -> None:
    write_json(rounds.directory(state.round) / "report.json", asdict(state))
    # The round being reported is taken as it is in memory: its state.json is written after the report.
    states = sorted([s for s in rounds.states() if s.round != state.round] + [state], key=lambda s: s.round)
    root = rounds.store.root / "rounds"
    (root / "report.md").write_text(markdown_table(states) + per_level_table(states))
    plot(states, root / "progress.png")
