"""Self-evolution rounds: the saved state (`state`), the pure rules (`rules`), the stages in their order
(`stages`), the resumable runner (`runner`) and the reports over all rounds (`report`)."""

from services.trainer.rounds.rules import held_out, regressions, scaled_steps, sft_mix
from services.trainer.rounds.runner import RoundRunner
from services.trainer.rounds.stages import STAGE_NAMES, STAGES, Stage
from services.trainer.rounds.state import Rounds, RoundState

__all__ = [
    "STAGES",
    "STAGE_NAMES",
    "RoundRunner",
    "RoundState",
    "Rounds",
    "Stage",
    "held_out",
    "regressions",
    "scaled_steps",
    "sft_mix",
]
