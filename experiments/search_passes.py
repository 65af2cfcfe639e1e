"""What each search pass of a round found: clean solutions by number of moves, lucky ones, problems newly solved.

A round searches its pool once, then may search again the problems left unsolved (`--unsolved-retries`) or the
ones solved only sometimes (`--frontier-retries`). Each pass's trees are in `rounds/<n>/<pass>/` of the store.
For every pass this prints the problems searched, the clean right trajectories the SFT would take (top 2 a
tree, the number rule on) by how many moves (code steps before the print) they take, the right answers dropped
as lucky, and the problems that pass solved cleanly for the first time in the round.

    python experiments/search_passes.py STORE/rounds/0001 [--json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from services.math import stepfmt
from services.search.engine.mcts import Tree
from services.trainer.extract import NumberRule, extract


def moves(steps: tuple[str, ...]) -> int:
    """Code steps before the one that prints the answer."""
    return sum(1 for s in steps if s.endswith(stepfmt.END_OF_STEP))


def passes(round_dir: Path) -> list[dict[str, object]]:
    names = sorted(
        (p.name for p in round_dir.iterdir() if p.is_dir() and p.name.split("-")[0] in ("trees", "retry", "frontier")),
        key=lambda name: (name != "trees", name),
    )
    solved_before: set[str] = set()
    report = []
    for name in names:
        trees_by_problem = {
            path.stem: [Tree.from_json(t) for t in json.loads(path.read_text()).get("trees", [])]
            for path in sorted((round_dir / name).glob("*.json"))
        }
        by_moves: Counter[int] = Counter()
        lucky = 0
        solved: set[str] = set()
        for problem, trees in trees_by_problem.items():
            data = extract(trees, numbers=NumberRule())
            lucky += data.dropped.get("foreign number", 0)
            for trajectory in data.trajectories:
                by_moves[moves(trajectory.steps)] += 1
            if data.trajectories:
                solved.add(problem)
        report.append(
            {
                "pass": name,
                "problems": len(trees_by_problem),
                "clean_trajectories_by_moves": dict(sorted(by_moves.items())),
                "four_moves_or_more": sum(n for m, n in by_moves.items() if m >= 4),
                "lucky_dropped": lucky,
                "solved": len(solved),
                "newly_solved": len(solved - solved_before),
            }
        )
        solved_before |= solved
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("round_dir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = passes(args.round_dir)
    state = args.round_dir / "state.json"
    seconds = json.loads(state.read_text()).get("seconds", {}).get("search") if state.is_file() else None
    if args.json:
        print(json.dumps({"passes": rows, "search_seconds": seconds}))
        return
    for row in rows:
        print(
            f"{row['pass']:<12} problems {row['problems']:>4}  solved {row['solved']:>4} "
            f"(new {row['newly_solved']:>3})  clean by moves {row['clean_trajectories_by_moves']}  "
            f"lucky dropped {row['lucky_dropped']}"
        )
    print(f"search stage: {seconds} s")


if __name__ == "__main__":
    main()
