"""`thinkmesh eval --preset`: a named configuration, every flag given over it, and every knob sent to
SearchService with --target."""

from __future__ import annotations

from services.cli.main import build_parser
from services.cli.search import eval_settings
from services.search.eval.evaluate import EVAL_PRESETS, EvalSettings


def _settings(*flags: str) -> EvalSettings:
    return eval_settings(build_parser().parse_args(["eval", "--dataset", "math500", *flags]))


def test_without_a_preset_the_defaults_are_the_engines() -> None:
    s = _settings()
    assert (s.method, s.search.rollouts, s.search.candidates, s.search.max_depth, s.searches) == (
        "greedy",
        16,
        4,
        16,
        1,
    )
    assert (s.sampling.temperature, s.sampling.max_new_tokens, s.search.q_mode, s.search.seed) == (
        0.8,
        256,
        "ppm",
        12345,
    )


def test_the_rstar_preset_is_the_authors_inference_search_and_flags_override_it() -> None:
    s = _settings("--preset", "rstar-eval")
    assert s.method == "mcts" and s.search.candidates == 32 and s.searches == 64 and s.answer_method == "ppm"
    assert (s.sampling.temperature, s.sampling.max_new_tokens, s.search.c) == (1.0, 2048, 2.0)
    assert s.search == EVAL_PRESETS["rstar-eval"].search.__class__(
        **{**vars(EVAL_PRESETS["rstar-eval"].search), "seed": 12345}
    )
    o = _settings("--preset", "rstar-eval", "--searches", "4", "--candidates", "8", "--temperature", "0.6")
    assert (o.searches, o.search.candidates, o.sampling.temperature, o.search.rollouts) == (4, 8, 0.6, 16)


def test_a_bad_problem_file_is_reported_not_raised(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from services.cli.main import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert main(["eval", "--dataset", str(bad)]) == 2
    assert "row 1 has no answer" in capsys.readouterr().err
