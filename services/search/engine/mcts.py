"""The MCTS engine of rStar-Math: pure (no I/O), deterministic under a seed.

A `Tree` searches one problem. It never calls a service: it says what it needs next (`tree.need`), and an
orchestrator — which batches the needs of many trees into one call per service — hands the answers back
(`tree.deliver(...)`). Needs come one kind at a time per tree:

    Expand(node)        n candidate next steps from the policy
    Execute(nodes)      run each new code step's program (all earlier code + the step) in the sandbox
    Score(nodes)        PPM scores of the new children
    Grade(nodes)        compare terminal answers with the reference (training mode only)

One rollout (the paper's and the authors' scripts' shape): from the root, select by UCT through expanded nodes;
expand the leaf; run and score its new children; pick one by UCT; keep expanding down until a terminal node
(an answer, too many consecutive code errors, a malformed step, or the depth limit); back-propagate its reward.

Rewards: a final answer is +1/−1 against the reference answer when one is given (training), or the PPM's score
of the answer step when not (inference). Unparsable output, the depth limit or too many consecutive code errors:
−1 at that node. Q annotation: "terminal" (rounds 1–2: Q = q/N from terminal rewards alone) or "ppm" (rounds
3–4: a new node starts with the PPM's score as its initial q).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from services.math import stepfmt

QMode = Literal["terminal", "ppm"]


@dataclass(frozen=True)
class SearchConfig:
    rollouts: int = 16
    candidates: int = 4  # children per expansion (paper: 8 in training, 32 at inference)
    max_depth: int = 16
    c: float = 2.0  # UCT exploration constant (paper: 2)
    # Consecutive code errors tolerated along a path; one more makes the node terminal with −1.
    # (authors' code: 2 in round 1, 1 afterwards)
    max_code_errors: int = 1
    q_mode: QMode = "terminal"
    seed: int = 0


# A search without a reference answer (a Solve, `thinkmesh eval`): the PPM's score is each node's initial Q.
# The search tier's settings and the evaluator start from this one; a training round sets q_mode per round.
INFERENCE = SearchConfig(q_mode="ppm")


class NodeState(StrEnum):
    NEW = "new"  # created from a candidate, not yet executed
    READY = "ready"  # executed (if it has code) and scored
    TERMINAL = "terminal"


@dataclass
class Node:
    id: int
    parent: int | None
    step: str  # the step's text ("" for the root)
    depth: int
    children: list[int] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    ppm_score: float = 0.0
    expanded: bool = False
    terminal: bool = False
    reward: float | None = None  # set once for terminal nodes
    answer: str | None = None
    stdout: str | None = None  # output of a CODE_END step's program
    code_errors: int = 0  # consecutive, along the path
    error: str | None = None  # why a terminal node is −1 (malformed, code error, depth)
    tokens: int = 0  # the step's, as the policy generated it
    logprob: float = 0.0  # the policy's log-probability of the step, summed over its tokens

    def q(self, mode: QMode) -> float:
        if mode == "ppm":
            # The PPM's score is the initial q: it counts as one pseudo-visit.
            return (self.value_sum + self.ppm_score) / (self.visits + 1)
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass(frozen=True)
class Expand:
    node: int
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Execute:
    nodes: tuple[int, ...]
    programs: tuple[str, ...]


@dataclass(frozen=True)
class Score:
    nodes: tuple[int, ...]
    steps: tuple[tuple[str, ...], ...]  # the full path of each node


@dataclass(frozen=True)
class Grade:
    nodes: tuple[int, ...]
    answers: tuple[str, ...]


Need = Expand | Execute | Score | Grade


@dataclass(frozen=True)
class Candidate:
    text: str
    finished: bool  # ended at a step marker (not the token limit)
    tokens: int = 0
    logprob: float = 0.0  # the policy's, summed over the step's tokens


@dataclass(frozen=True)
class Execution:
    ok: bool
    stdout: str
    error: str = ""


@dataclass
class Stats:
    rollouts: int = 0
    nodes: int = 1
    expansions: int = 0
    executions: int = 0
    scored: int = 0
    graded: int = 0


class Tree:
    def __init__(self, question: str, config: SearchConfig, reference: str | None = None) -> None:
        self.question = question
        self.config = config
        self.reference = reference
        self.rng = random.Random(config.seed)
        self.nodes: list[Node] = [Node(id=0, parent=None, step="", depth=0)]
        self.stats = Stats()
        self.need: Need | None = None
        self._cursor = 0  # the node the current rollout is at
        self._fresh: list[int] = []  # children created by the last expansion, in creation order
        self._start_rollout()

    # --- paths --------------------------------------------------------------------------------------

    def path(self, node_id: int) -> list[int]:
        ids = []
        current: int | None = node_id
        while current is not None and current != 0:
            ids.append(current)
            current = self.nodes[current].parent
        return ids[::-1]

    def steps_of(self, node_id: int) -> tuple[str, ...]:
        """The trajectory up to a node, as the policy sees it: a CODE_END step is followed by its output."""
        steps: list[str] = []
        for nid in self.path(node_id):
            node = self.nodes[nid]
            steps.append(node.step)
            if node.stdout is not None:
                steps.append(stepfmt.render_output(node.stdout))
        return tuple(steps)

    # --- the rollout state machine ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.need is None

    def _start_rollout(self) -> None:
        if self.stats.rollouts >= self.config.rollouts:
            self.need = None
            return
        self._cursor = self._select_leaf()
        self._advance()

    def _select_leaf(self) -> int:
        node = self.nodes[0]
        while node.expanded and not node.terminal and node.children:
            node = self.nodes[self._select(node)]
        return node.id

    def _advance(self) -> None:
        """From the cursor: finish rollouts at terminal nodes until a node needs expanding (or grading)."""
        while True:
            node = self.nodes[self._cursor]
            if not node.terminal and node.depth >= self.config.max_depth:
                self._make_terminal(node, -1.0, "depth limit")
            if not node.terminal:
                self.need = Expand(node.id, self.steps_of(node.id))
                return
            if node.reward is None:  # an answer waiting for its grade
                self.need = Grade((node.id,), (node.answer or "",))
                return
            self._backpropagate(node)
            self.stats.rollouts += 1
            if self.stats.rollouts >= self.config.rollouts:
                self.need = None
                return
            # A rollout that ends on a known terminal costs no service call: start the next one here.
            self._cursor = self._select_leaf()

    def _select(self, parent: Node) -> int:
        """UCT: Q + c·sqrt(ln N_parent / N_child); unvisited children first in terminal mode."""
        mode, c = self.config.q_mode, self.config.c
        log_parent = math.log(max(parent.visits, 1))
        best: list[int] = []
        best_value = -math.inf
        for child_id in parent.children:
            child = self.nodes[child_id]
            if child.visits == 0 and mode == "terminal":
                value = math.inf
            else:
                value = child.q(mode) + c * math.sqrt(log_parent / (child.visits + (1 if mode == "ppm" else 0)))
            if value > best_value:
                best, best_value = [child_id], value
            elif value == best_value:
                best.append(child_id)
        return self.rng.choice(best)

    def _backpropagate(self, leaf: Node) -> None:
        reward = leaf.reward if leaf.reward is not None else -1.0
        current: Node | None = leaf
        while current is not None:
            current.visits += 1
            current.value_sum += reward
            current = self.nodes[current.parent] if current.parent is not None else None

    def _make_terminal(self, node: Node, reward: float | None, error: str | None = None) -> None:
        node.terminal = True
        node.reward = reward
        node.error = error

    # --- answers from the orchestrator --------------------------------------------------------------------

    def deliver_candidates(self, candidates: Sequence[Candidate]) -> None:
        need = self.need
        assert isinstance(need, Expand), f"not waiting for candidates but for {need}"
        parent = self.nodes[need.node]
        parent.expanded = True
        self.stats.expansions += 1
        after_code = parent.stdout is not None
        seen: set[str] = set()
        self._fresh = []
        for candidate in candidates:
            text = candidate.text.strip()
            if text in seen:  # identical texts are one child
                continue
            seen.add(text)
            child = Node(
                id=len(self.nodes),
                parent=parent.id,
                step=text,
                depth=parent.depth + 1,
                code_errors=parent.code_errors,
                tokens=candidate.tokens,
                logprob=candidate.logprob,
            )
            self.nodes.append(child)
            parent.children.append(child.id)
            self._fresh.append(child.id)
            self._classify(child, candidate.finished, after_code)
        self.stats.nodes = len(self.nodes)
        if not self._fresh:  # the policy gave nothing: a dead end
            self._make_terminal(parent, -1.0, "no candidates")
            self._advance()
            return
        self._request_executions()

    def _classify(self, child: Node, finished: bool, after_code: bool) -> None:
        parsed = stepfmt.parse_step(child.step)
        kind = parsed.kind
        if not finished or kind in (stepfmt.StepKind.INCOMPLETE, stepfmt.StepKind.MALFORMED, stepfmt.StepKind.OUTPUT):
            self._make_terminal(child, -1.0, parsed.error or "unfinished step")
        elif after_code and kind is not stepfmt.StepKind.ANSWER:
            self._make_terminal(child, -1.0, "after the program's output only the answer may follow")
        elif kind is stepfmt.StepKind.ANSWER:
            child.answer = parsed.answer
            if parsed.answer is None:
                self._make_terminal(child, -1.0, "no boxed answer")
            else:
                # Rewarded after scoring (inference) or grading (training).
                self._make_terminal(child, None)

    def _request_executions(self) -> None:
        code_nodes = [nid for nid in self._fresh if not self.nodes[nid].terminal]
        if code_nodes:
            self.need = Execute(tuple(code_nodes), tuple(stepfmt.program_of(self.steps_of(n)) for n in code_nodes))
        else:
            self._request_scores()

    def deliver_executions(self, results: Sequence[Execution]) -> None:
        need = self.need
        assert isinstance(need, Execute), f"not waiting for executions but for {need}"
        self.stats.executions += len(results)
        for node_id, result in zip(need.nodes, results, strict=True):
            node = self.nodes[node_id]
            is_code_end = stepfmt.ends_code(node.step)
            if result.ok:
                node.code_errors = 0
                if is_code_end:
                    node.stdout = stepfmt.truncate_output(result.stdout)
            else:
                node.code_errors += 1
                if node.code_errors > self.config.max_code_errors or is_code_end:
                    # The last code step must run: its output is what the answer reads.
                    self._make_terminal(node, -1.0, f"code error: {result.error[-200:]}")
        self._request_scores()

    def _request_scores(self) -> None:
        # An empty step has nothing for the PPM to read: it is already terminal with −1.
        scorable = [n for n in self._fresh if self.nodes[n].step]
        for node_id in self._fresh:
            if not self.nodes[node_id].step:
                self.nodes[node_id].ppm_score = -1.0
        if not scorable:
            self._after_scores()
            return
        self.need = Score(tuple(scorable), tuple(self.steps_of(n) for n in scorable))

    def deliver_scores(self, scores: Sequence[float]) -> None:
        need = self.need
        assert isinstance(need, Score), f"not waiting for scores but for {need}"
        self.stats.scored += len(scores)
        for node_id, score in zip(need.nodes, scores, strict=True):
            node = self.nodes[node_id]
            node.ppm_score = float(score)
            if node.terminal and node.reward is None and self.reference is None:
                node.reward = node.ppm_score  # inference: the PPM judges the final answer
        self._after_scores()

    def _after_scores(self) -> None:
        to_grade = [n for n in self._fresh if self.nodes[n].terminal and self.nodes[n].reward is None]
        if to_grade:
            self.need = Grade(tuple(to_grade), tuple(self.nodes[n].answer or "" for n in to_grade))
            return
        self._descend()

    def deliver_grades(self, equal: Sequence[bool]) -> None:
        need = self.need
        assert isinstance(need, Grade), f"not waiting for grades but for {need}"
        self.stats.graded += len(equal)
        for node_id, same in zip(need.nodes, equal, strict=True):
            self.nodes[node_id].reward = 1.0 if same else -1.0
        if self._fresh:  # grades of a fresh expansion's answers: continue the rollout below it
            self._descend()
        else:  # the grade of the terminal node the rollout stands on
            self._advance()

    def _descend(self) -> None:
        """Continue the rollout from the freshly expanded node into one of its new children."""
        parent = self.nodes[self.nodes[self._fresh[0]].parent or 0]
        self._fresh = []
        self._cursor = self._select(parent)
        self._advance()

    # --- results --------------------------------------------------------------------------------------

    def terminals(self) -> list[Node]:
        """Terminal nodes that carry an answer."""
        return [n for n in self.nodes if n.terminal and n.answer is not None and n.reward is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "reference": self.reference,
            "config": asdict(self.config),
            "stats": asdict(self.stats),
            "nodes": [asdict(n) for n in self.nodes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tree:
        tree = cls(data["question"], SearchConfig(**data["config"]), data.get("reference"))
        tree.nodes = [Node(**n) for n in data["nodes"]]
        tree.stats = Stats(**data["stats"])
        tree.need = None
        return tree
