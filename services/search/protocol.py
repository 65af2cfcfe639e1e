"""What crosses the Celery boundary: a solve task, its progress, its result.

The SearchService and the trainer build a `SolveTask`; the broker carries `task.to_json()`; the worker reads it
back with `SolveTask.from_json`, which names the field of a bad payload. A knob left at 0 (or "") means "the
search tier's default": SearchService fills a Solve's from its settings, and the worker whatever a producer
still left unset, from its `SearchSettings`, with `with_defaults`. The worker
answers with a `SolveResult` (stored under `job`/`problem_id` when the task names a job) and reports
`SolveProgress` while it searches. The JSON shapes are the plain dicts these tasks always carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_type_hints

from services.common.errors import InvalidInput
from services.search.engine.answers import METHODS

if TYPE_CHECKING:
    from services.search.settings import SearchSettings

# The Celery task names: the wire contract between the SearchService, the trainer and the workers.
SOLVE = "thinkmesh.solve"
PING = "thinkmesh.ping"

Q_MODES = ("terminal", "ppm")
_T = TypeVar("_T")
_MISSING: Any = object()


def _read(payload: Mapping[str, Any], what: str, name: str, kind: type[_T], default: Any = _MISSING) -> _T:
    """`payload[name]` as a `kind`, or `default` when it is absent or null; InvalidInput naming the field."""
    value = payload.get(name)
    if value is None:
        if default is _MISSING:
            raise InvalidInput(f"{what}: {name} is missing")
        return default  # type: ignore[no-any-return]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise InvalidInput(f"{what}: {name} must be {kind.__name__}, not {type(value).__name__} {value!r:.40}")
    return value


def _mapping(payload: Any, what: str, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"{what}: expected a JSON object, not {type(payload).__name__}")
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise InvalidInput(f"{what}: unknown field(s) {', '.join(map(str, unknown))}")
    return payload


def _read_fields(cls: type[Any], payload: Any, what: str) -> dict[str, Any]:
    """Every field of a flat dataclass of str / int / float / bool (each possibly None) read from `payload`, typed
    and defaulted as the class declares it."""
    data = _mapping(payload, what, tuple(f.name for f in fields(cls)))
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        (kind,) = [t for t in get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
        values[f.name] = _read(data, what, f.name, kind, _MISSING if f.default is MISSING else f.default)
    return values


@dataclass(frozen=True)
class SolveTask:
    """One problem to search. 0 / "" = the search tier's default (`with_defaults`)."""

    question: str
    reference: str | None = None  # training: rewards terminals ±1 against this answer
    rollouts: int = 0
    candidates: int = 0
    max_depth: int = 0
    searches: int = 0  # independent trees, their answers pooled
    q_mode: str = ""  # "terminal" | "ppm"
    method: str = ""  # how the final answer is chosen (services/search/engine/answers.py)
    max_code_errors: int = 0
    seed: int = 0
    # How the policy is sampled for this task (a training round's preset); None / 0 = the worker's settings.
    temperature: float | None = None
    max_new_tokens: int = 0
    # Another PolicyService to generate with ("host:port"; "" = the worker's): a teacher model for a first
    # round. Only the trainer sets it; a Solve request cannot.
    policy_target: str = ""
    deadline: float | None = None  # epoch seconds: stop searching then and answer with the best so far
    # Where the result is kept (<store>/<job>/<problem_id>.json), so a retried task returns it instead of searching
    # again: a training round's searches. "" = not kept (an online Solve: its result goes back through Celery).
    job: str = ""
    problem_id: str = ""
    store: str = ""  # the store's root; "" = the worker's
    include_trees: bool = False  # the finished trees go into the stored result (training)

    def __post_init__(self) -> None:
        for name in ("rollouts", "candidates", "max_depth", "searches", "max_code_errors", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"solve task: {name} must not be negative")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise InvalidInput(f"solve task: temperature must be between 0 and 2, not {self.temperature}")
        if self.q_mode not in ("", *Q_MODES):
            raise InvalidInput(f"solve task: q_mode must be one of {', '.join(Q_MODES)}, not {self.q_mode!r}")
        if self.method not in ("", *METHODS):
            raise InvalidInput(f"solve task: method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.job and not self.problem_id:
            raise InvalidInput("solve task: a job needs a problem_id (the result is kept under both)")

    @property
    def kept(self) -> bool:
        """Whether the result is stored under job/problem_id."""
        return bool(self.job)

    def with_defaults(self, settings: SearchSettings) -> SolveTask:
        """Every knob a producer left at 0 / "" set from the worker's settings (the one place a worker applies
        defaults; SearchService fills a Solve's knobs from its own settings before it sends the task)."""
        s = settings.search
        return replace(
            self,
            rollouts=self.rollouts or s.rollouts,
            candidates=self.candidates or s.candidates,
            max_depth=self.max_depth or s.max_depth,
            searches=self.searches or settings.searches,
            q_mode=self.q_mode or s.q_mode,
            method=self.method or settings.answer_method,
            max_code_errors=self.max_code_errors or s.max_code_errors,
            seed=self.seed or s.seed,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Any) -> SolveTask:
        values = _read_fields(cls, payload, "solve task")
        return cls(**{**values, "reference": values["reference"] or None})


@dataclass(frozen=True)
class SolveProgress:
    """What a running search reports, at most twice a second: the SearchService streams it (SolveStream) and, when
    the result itself is late, answers with its best so far."""

    rollouts_done: int
    rollouts_total: int
    best_answer: str = ""
    best_score: float = 0.0
    best_solution: str = ""  # the trajectory of the best answer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Any) -> SolveProgress:
        return cls(**_read_fields(cls, payload, "solve progress"))


STAT_NAMES = ("rollouts", "nodes", "policy_calls", "sandbox_runs", "ppm_calls", "wall_ms")


@dataclass(frozen=True)
class SolveResult:
    """A finished search: the answer, its trajectory and score, what it cost, the models that made it."""

    answer: str
    solution: str
    score: float
    stats: Mapping[str, int]  # STAT_NAMES
    policy_version: str = ""
    ppm_version: str = ""
    stopped_early: bool = False  # the deadline passed or the search was cancelled before the rollouts were spent
    # The orchestrator's RunStats (calls, items, seconds); empty when no search ran: a task that reached its worker
    # after its stop time is dropped unsearched.
    run: Mapping[str, Any] = field(default_factory=dict)
    trees: tuple[Mapping[str, Any], ...] | None = None  # Tree.to_json() of each search, when the task asked
    job: str = ""  # as the task named them, when the result is kept
    problem_id: str = ""

    @property
    def searched(self) -> bool:
        """Whether a search ran (see `run`)."""
        return bool(self.run)

    def without_trees(self) -> SolveResult:
        """What travels through the result backend: the trees stay in the store."""
        return replace(self, trees=None)

    def to_json(self) -> dict[str, Any]:
        kept = {"job": self.job, "problem_id": self.problem_id} if self.job else {}
        result: dict[str, Any] = {
            **kept,
            "answer": self.answer,
            "solution": self.solution,
            "score": self.score,
            "stats": dict(self.stats),
            "policy_version": self.policy_version,
            "ppm_version": self.ppm_version,
            "stopped_early": self.stopped_early,
            "run": dict(self.run),
        }
        if self.trees is not None:
            result["trees"] = [dict(tree) for tree in self.trees]
        return result

    @classmethod
    def from_json(cls, payload: Any) -> SolveResult:
        what = "solve result"
        data = _mapping(payload, what, _RESULT_FIELDS)
        stats = _read(data, what, "stats", dict)
        for name, value in stats.items():
            if name not in STAT_NAMES or not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"{what}: stats.{name} must be one of {', '.join(STAT_NAMES)} with an int value")
        trees = _read(data, what, "trees", list, None)
        if trees is not None and not all(isinstance(tree, dict) for tree in trees):
            raise InvalidInput(f"{what}: trees must be a list of JSON objects")
        return cls(
            answer=_read(data, what, "answer", str),
            solution=_read(data, what, "solution", str),
            score=_read(data, what, "score", float),
            stats=stats,
            policy_version=_read(data, what, "policy_version", str, ""),
            ppm_version=_read(data, what, "ppm_version", str, ""),
            stopped_early=_read(data, what, "stopped_early", bool, False),
            run=_read(data, what, "run", dict, {}),
            trees=tuple(trees) if trees is not None else None,
            job=_read(data, what, "job", str, ""),
            problem_id=_read(data, what, "problem_id", str, ""),
        )


_RESULT_FIELDS = tuple(SolveResult.__dataclass_fields__)
