"""Configuration of self-evolution rounds, with named presets (the numbers and why they are what they are)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.search.engine.mcts import SearchConfig
from services.search.engine.orchestrator import Sampling
from services.trainer.data import PPMConfig, SFTConfig
from services.trainer.extract import NumberRule


@dataclass(frozen=True)
class RoundConfig:
    # The pool: problems with reference answers, drawn fresh each round. Self-evolution only learns from problems
    # the search sometimes solves, so by default the pool sits around the frontier (the first held-out level the
    # current policy solves less than half of, greedily): one share of the level below it, two of the frontier
    # level, one of the level above. A non-empty `pool_levels` fixes the levels instead (repeats weight a level).
    # 240 problems: a pool of 80 gave 22–29 SFT trajectories a round, too few to move the policy; since the
    # sampling loop and the dispatcher fix, a round's search of 240 takes about what 80 did before.
    pool_size: int = 240
    pool_levels: tuple[int, ...] = ()
    # The user's own problems instead of the curriculum: a problem file (services/math/datasets.py
    # `read_problem_file`: JSONL with question and answer, or a file of ../shared/data as it is). Each round
    # searches `pool_size` of them, drawn with the round's seed (all of them when the file holds no more).
    pool_file: str = ""
    # With a pool file, SFT and the PPM also replay the curriculum's teacher data (`sft_replay`, `ppm_replay`)
    # only when asked: it is the embedded world's, not the user's.
    curriculum_replay: bool = False
    # Round 1 from a teacher: its searches generate with this PolicyService ("host:port": a stronger model behind
    # any backend, as the paper's round 1 used DeepSeek-Coder-V2), terminal-guided; the user's model is trained on
    # what it finds. Or from supplied trajectories: round 1 trains on this file (JSONL: question and the steps in
    # the step format) instead of searching.
    teacher_target: str = ""
    sft_file: str = ""
    # The engine's configuration for the pool's searches. Search budget per problem. Paper: 8 candidates × 16
    # rollouts (round 1: 5 × 8); scaled to a 2-core CPU. Each round sets q_mode and, in round 1, the code errors
    # tolerated (below); `max_code_errors` (authors' code: 1 after round 1) holds for the later rounds.
    search: SearchConfig = field(default_factory=lambda: SearchConfig(rollouts=8, candidates=4, max_depth=12))
    # How the pool's searches sample the policy (temperature, new tokens per step); None: the search tier's own
    # THINKMESH_SEARCH_TEMPERATURE / _MAX_NEW_TOKENS.
    sampling: Sampling | None = None
    # What the first search did not solve is searched again, once per entry (rollouts, candidates), each pass on
    # the problems still unsolved: the paper's round 4 gives them 64, then 128 rollouts with 16 candidates. Off
    # here: on 2 cores a pass with more candidates costs several times the first search (docs/results.md).
    unsolved_retries: tuple[tuple[int, int], ...] = ()
    # Spend the budget at the frontier: the problems the first search solved sometimes — some of its terminals
    # reached the answer cleanly, some did not — are searched again, once per entry (rollouts, candidates), with a
    # new seed; the ones it solved every time or never are not. Off by default (docs/results.md measures it
    # against `unsolved_retries`).
    frontier_retries: tuple[tuple[int, int], ...] = ()
    # Rounds 1–2: terminal-guided Q; from this round on: PPM-augmented (paper: rounds 3–4).
    ppm_q_from_round: int = 3
    # Consecutive code errors tolerated in round 1 (authors' code: 2).
    first_round_code_errors: int = 2
    pair_margin: float = 0.5
    # Only clean solutions are taught: a right answer whose program uses a number that neither its question, an
    # earlier output nor `sound_constants` gives is right by luck (services/trainer/extract.py `NumberRule`), and
    # neither SFT nor the PPM's pairs take it as right. The constants are what the curriculum's own teacher
    # solutions use unstated (100 for percentages, 2 and 4 legs); real problem sets need units and the like, so
    # the rule holds for the curriculum only: a `pool_file` of the user's problems turns it off, as do the rstar
    # presets.
    number_rule: bool = True
    sound_constants: tuple[str, ...] = ("2", "4", "100")
    # Policy SFT from the round-0 model on every round's trajectories so far, each repeated `sft_weight` times,
    # plus `sft_replay` of the bootstrap's teacher solutions: without the replay a few dozen trajectories
    # over-fit the tiny model and it forgets the easy levels (measured: a round on 14 trajectories alone lost
    # most of its frontier pass@16, 0.30 → 0.05). Steps follow the data: `sft_epochs` passes, within
    # [`sft_min_steps`, `sft.max_steps`]. A low learning rate: the search's own trajectories perturb what the
    # bootstrap learnt; on one round's data, 1e-3 left level-3 pass@16 at 0.15 and 2e-4 at 0.25 (bootstrap 0.30).
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(max_steps=500, batch_size=16, learning_rate=2e-4, warmup_steps=20)
    )
    sft_replay: int = 1000
    # Of the replay, the share said another way, as in the bootstrap's data (`BootstrapConfig.rephrased`).
    replay_rephrased: float = 0.5
    sft_weight: int = 3
    sft_epochs: float = 2.0
    sft_min_steps: int = 100
    # PPM from the new policy on every round's tree pairs so far plus `ppm_replay` teacher-vs-corrupted pairs of
    # the bootstrap's kind (a fresh value head needs them to learn what a wrong number looks like); steps as above.
    ppm: PPMConfig = field(default_factory=lambda: PPMConfig(max_steps=300, batch_size=16, warmup_steps=20))
    ppm_replay: int = 1500
    ppm_epochs: float = 2.0
    ppm_min_steps: int = 100
    # Held-out evaluation: unseen problems of the levels around the frontier, every method at equal rollouts; or
    # the first `eval_size` problems of `eval_dataset` (any `thinkmesh eval` dataset or a problem file). 300 a
    # level: a round's gain is a few problems in a hundred, which 20 a level could not see (docs/results.md); each
    # round is compared with the one before problem by problem (`rounds/paired.py`). Level 5, where the embedded
    # models solve 1–2 %, is left to `thinkmesh eval`: 300 problems there cost most of an evaluation and show nothing.
    eval_dataset: str = ""
    eval_size: int = 100
    eval_levels: tuple[int, ...] = (3, 4)
    eval_per_level: int = 300
    eval_rollouts: int = 8
    # What an evaluation can afford on 2 cores (its MCTS on 300 level-4 problems took 524 s of a 19-minute one):
    # greedy decoding on every problem, MCTS on the `eval_mcts_levels` (None: all), majority voting and
    # best-of-N (`eval_rollouts` samples each) on the first `eval_sampled_per_level` of each level (None: all).
    eval_mcts_levels: tuple[int, ...] | None = (3,)
    eval_sampled_per_level: int | None = 30
    frontier_problems: int = 20
    frontier_samples: int = 16
    # Of the pool's problems: their pairs and trajectories are held out, never trained on (PPM or policy).
    heldout_pair_fraction: float = 0.15
    # The publishing gate's threshold: a round whose MCTS or greedy accuracy drops more than this below the
    # current models' is rejected (`rounds.rules.regressions`). Every preset has one: accuracies lie in [0, 1], so
    # a threshold of 1 or more would let any round through, and is refused.
    regression_gate: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.regression_gate < 1.0:  # also refuses NaN, which no comparison would ever trip
            raise ValueError(
                f"regression_gate={self.regression_gate} must be in [0, 1): at 1 or more the gate refuses nothing"
            )

    @property
    def numbers(self) -> NumberRule | None:
        """The rule that tells a clean solution from a lucky one, or None when it is off (or the pool is the user's)."""
        return NumberRule(frozenset(self.sound_constants)) if self.number_rule and not self.pool_file else None

    def supplied(self, number: int) -> bool:
        """Whether round `number` trains on the supplied trajectories instead of searching."""
        return number == 1 and bool(self.sft_file)

    @property
    def replays_curriculum(self) -> bool:
        """Whether SFT and the PPM mix in the curriculum's teacher data."""
        return not self.pool_file or self.curriculum_replay

    def searching(self, **knobs: object) -> RoundConfig:
        """This config with some of the pool search's knobs changed (rollouts, candidates, ...)."""
        return replace(self, search=replace(self.search, **knobs))  # type: ignore[arg-type]


PRESETS: dict[str, RoundConfig] = {
    "default": RoundConfig(),
    # CI: asserts the machinery in minutes, not the gains.
    "tiny": RoundConfig(
        pool_size=6,
        pool_levels=(1,),
        search=SearchConfig(rollouts=2, candidates=2, max_depth=6),
        sft=SFTConfig(max_steps=4, batch_size=4, warmup_steps=1),
        sft_replay=8,
        sft_min_steps=4,
        ppm=PPMConfig(max_steps=4, batch_size=4, warmup_steps=1),
        ppm_replay=8,
        ppm_min_steps=4,
        eval_levels=(1,),
        eval_per_level=4,
        eval_mcts_levels=None,
        eval_rollouts=2,
        frontier_problems=3,
        frontier_samples=2,
        # A gate that still refuses a collapse: with 4 held-out problems one problem moves an accuracy by 0.25, so
        # 0.5 lets a CI round lose two of them to noise and rejects one that loses most of what it solved.
        regression_gate=0.5,
    ),
    # `make demo`: one round in under a minute on 2 cores; it shows the machinery, too small to improve anything.
    "demo": RoundConfig(
        pool_size=8,
        pool_levels=(2, 3),
        search=SearchConfig(rollouts=4, candidates=3, max_depth=8),
        sft=SFTConfig(max_steps=24, batch_size=8, learning_rate=2e-4, warmup_steps=3),
        sft_replay=128,
        sft_min_steps=24,
        ppm=PPMConfig(max_steps=20, batch_size=8, warmup_steps=2),
        ppm_replay=128,
        ppm_min_steps=20,
        eval_levels=(3,),
        eval_per_level=4,
        eval_mcts_levels=None,
        eval_rollouts=4,
        frontier_problems=4,
        frontier_samples=4,
    ),
}


# --- The paper's rounds, for real models (arXiv 2501.04519 and the authors' code, microsoft/rStar branch rStar-math;
# ../shared/docs/rstar-math.md). docs/models.md lists every field with its source. Each preset says everything its
# round does whatever the round's number: q_mode and the code errors tolerated are fixed by the preset.
NEVER = 1_000_000  # a round number no run reaches: terminal-guided Q throughout


def _rstar_round(
    *, rollouts: int, candidates: int, temperature: float, ppm_q: bool, code_errors: int, **more: object
) -> RoundConfig:
    return RoundConfig(
        # Search: c = 2, depth 16 (paper, MCTS); the rollouts and candidates of the round (below); 2,048 new tokens
        # per step (authors' inference config, which their training configs share).
        search=SearchConfig(rollouts=rollouts, candidates=candidates, max_depth=16, c=2.0, max_code_errors=code_errors),
        sampling=Sampling(temperature=temperature, max_new_tokens=2048),
        ppm_q_from_round=1 if ppm_q else NEVER,
        first_round_code_errors=code_errors,
        # SFT: lr 7e-6, 2 epochs, batch 128 (paper), sequences up to 4,096 tokens (code); the data decides the steps.
        sft=SFTConfig(max_steps=NEVER, batch_size=128, learning_rate=7e-6, warmup_steps=0, max_length=4096),
        sft_epochs=2.0,
        sft_min_steps=1,
        sft_weight=1,
        sft_replay=0,  # real problems: no synthetic curriculum replay
        # PPM: lr 7e-6, batch 512 (paper), 2 epochs and max length 2,048 (code; the paper says 1 epoch).
        ppm=PPMConfig(max_steps=NEVER, batch_size=512, learning_rate=7e-6, warmup_steps=0, max_length=2048),
        ppm_epochs=2.0,
        ppm_min_steps=1,
        ppm_replay=0,
        pair_margin=0.5,  # code: a pair needs a Q margin of at least 0.5
        number_rule=False,  # real problems use numbers they do not state (units, constants)
        **more,  # type: ignore[arg-type]
    )


PRESETS.update(
    {
        # Round 1: terminal-guided, 5 candidates x 8 rollouts (paper), temperature 0.7 (code's bootstrap config),
        # 2 consecutive code errors tolerated (code). The paper's round 1 searched with a stronger teacher model.
        "rstar-r1": _rstar_round(rollouts=8, candidates=5, temperature=0.7, ppm_q=False, code_errors=2),
        # Round 2: the round-1 policy, terminal-guided, 8 candidates x 16 rollouts (paper), temperature 1.0 (code).
        "rstar-r2": _rstar_round(rollouts=16, candidates=8, temperature=1.0, ppm_q=False, code_errors=1),
        # Round 3: PPM-augmented Q from here on (paper).
        "rstar-r3": _rstar_round(rollouts=16, candidates=8, temperature=1.0, ppm_q=True, code_errors=1),
        # Round 4: as round 3, and the problems still unsolved get 64, then 128 rollouts with 16 candidates (paper).
        "rstar-r4": _rstar_round(
            rollouts=16,
            candidates=8,
            temperature=1.0,
            ppm_q=True,
            code_errors=1,
            unsolved_retries=((64, 16), (128, 16)),
        ),
    }
)


def parse_retries(text: str) -> tuple[tuple[int, int], ...]:
    """ "64:16,128:16" → ((64, 16), (128, 16)): rollouts and candidates of each retry of the unsolved problems."""
    passes = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        rollouts, sep, candidates = part.partition(":")
        try:
            numbers = (int(rollouts), int(candidates)) if sep else None
        except ValueError:
            numbers = None
        if numbers is None or min(numbers) < 1:
            raise ValueError(f"a retry is ROLLOUTS:CANDIDATES with both at least 1, not {part!r}")
        passes.append(numbers)
    return tuple(passes)


def preset(name: str, **overrides: object) -> RoundConfig:
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
