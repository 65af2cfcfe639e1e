"""`thinkmesh train sft|ppm`: one stage on 1 or 2 processes (torchrun over gloo), through the launcher a round uses.

Two processes must train the same model one process does: the recipe's batch is the global batch, each rank takes
its half of every global batch, and DDP averages the gradients, so the weights agree to float rounding (measured:
identical losses; weights within 2e-5 of each other
after moving ~1e-3, key biases aside). A stage stopped after a checkpoint resumes there and ends where an
uninterrupted run ends. Every rank reports taking part; rank 0 alone writes the model, once every rank finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from services.common.store import Lineage, ModelStore
from services.math.curriculum import generate
from services.trainer.corrupt import corrupted_pairs
from services.trainer.training.launch import LocalLauncher
from services.trainer.training.spec import RANKS_DIR, TrainingFailed, TrainingResult, TrainingSpec
from support.processes import THINKMESH
from support.tiny_models import write_chat_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Within float rounding: the two runs sum the same gradients in a different order, and AdamW divides each
# gradient by its own running size, so a rounding difference on a near-zero gradient becomes a visible step:
# measured up to 1.5e-5 after 8 steps that moved every weight by ~1e-3.
WEIGHT_TOLERANCE = 5e-5
# A key's bias shifts every score of a query's softmax by the same amount, so its true gradient is zero and
# what the optimizer steps on is rounding noise alone (it differs by up to 1e-4 between the runs): not compared.
NOISE_ONLY = ("self_attn.k_proj.bias",)
LOSS_TOLERANCE = 1e-4
# Long enough that the stop lands after the first checkpoint and well before the end.
STEPS = 48


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A micro checkpoint, SFT rows as `thinkmesh curriculum sample` prints them, and step pairs."""
    root = tmp_path_factory.mktemp("train")
    base = write_chat_checkpoint(root / "base")
    sample = subprocess.run(
        [THINKMESH, "curriculum", "sample", "--level", "1", "--n", "48"], capture_output=True, text=True, check=True
    )
    sft = root / "sft.jsonl"
    sft.write_text(sample.stdout)
    assert all(isinstance(json.loads(line)["solution"], list) for line in sample.stdout.splitlines())
    pairs = root / "pairs.jsonl"
    problems = generate(1, 16, seed=3) + generate(2, 16, seed=4)
    rows = [p.__dict__ for p in corrupted_pairs(problems, __import__("random").Random(0))][:64]
    pairs.write_text("".join(json.dumps({**row, "prefix": list(row["prefix"])}) + "\n" for row in rows))
    return base, sft, pairs


def command(stage: str, data: Path, base: Path, out: Path, nproc: int, steps: int = 8) -> list[str]:
    argv = [THINKMESH, "train", stage, "--data", str(data), "--base", str(base), "--out", str(out)]
    return [*argv, "--nproc-per-node", str(nproc), "--max-steps", str(steps), "--batch-size", "8", "--json"]


def train(stage: str, data: Path, base: Path, out: Path, nproc: int, *extra: str, steps: int = 8) -> TrainingResult:
    done = subprocess.run(
        [*command(stage, data, base, out, nproc, steps), *extra], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return TrainingResult.from_json(done.stdout.strip().splitlines()[-1])


def weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def assert_same_weights(a: str, b: str) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    compared = [k for k in first if not k.endswith(NOISE_ONLY)]
    worst = max(float((first[k].float() - second[k].float()).abs().max()) for k in compared)
    assert worst < WEIGHT_TOLERANCE, f"weights differ by up to {worst}"


def test_two_processes_train_what_one_process_trains(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, sft, _ = inputs
    one = train("sft", sft, base, tmp_path / "one", 1)
    two = train("sft", sft, base, tmp_path / "two", 2)
    assert (one.world_size, one.ranks, one.sharding) == (1, (0,), "none")
    assert (two.world_size, two.ranks, two.sharding) == (2, (0, 1), "ddp")
    # Both ranks took part: each trained on its own half of the tokens.
    took_part = [json.loads((tmp_path / "two" / RANKS_DIR / f"{r}.json").read_text()) for r in (0, 1)]
    assert all(r["tokens"] > 0 and r["steps"] == 8 for r in took_part)
    assert sum(r["tokens"] for r in took_part) == two.tokens == one.tokens
    assert two.steps == one.steps == 8 and two.examples == one.examples == 48
    assert abs(two.final_loss - one.final_loss) < LOSS_TOLERANCE
    assert abs(two.train_loss - one.train_loss) < LOSS_TOLERANCE
    assert_same_weights(one.out, two.out)
    # And the weights moved: a run that trained nothing would also "agree".
    untrained = weights(str(base))
    trained = weights(two.out)
    assert any(not torch.equal(untrained[k], trained[k]) for k in untrained)


def test_a_stopped_stage_resumes_from_its_checkpoint(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, sft, _ = inputs
    whole = train("sft", sft, base, tmp_path / "whole", 2, "--checkpoint-steps", "4", steps=STEPS)
    out = tmp_path / "stopped"
    stopped = subprocess.Popen(
        [*command("sft", sft, base, out, 2, STEPS), "--checkpoint-steps", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file():
        assert stopped.poll() is None, "the stage ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The launcher, without warning: its torchrun and both ranks must go with it (parent-death signal), so
    # nothing writes into the stage after this.
    os.killpg(stopped.pid, signal.SIGKILL)
    stopped.wait()
    time.sleep(3)
    assert not (out / "result.json").exists()

    resumed = train("sft", sft, base, out, 2, "--checkpoint-steps", "4", steps=STEPS)
    assert 4 <= resumed.resumed_from_step < STEPS and resumed.resumed_from_step % 4 == 0
    assert resumed.steps == STEPS
    assert abs(resumed.final_loss - whole.final_loss) < LOSS_TOLERANCE
    assert_same_weights(whole.out, resumed.out)


def test_a_ppm_stage_on_two_processes_publishes_one_version(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, _, pairs = inputs
    result = train("ppm", pairs, base, tmp_path / "ppm", 2)
    assert result.ranks == (0, 1) and result.steps == 8
    assert json.loads((Path(result.out) / "ppm.json").read_text())["likelihood"] is True
    # Rank 0 wrote one model directory, complete: no half-written copy is left beside it.
    assert sorted(p.name for p in (tmp_path / "ppm").iterdir() if "model" in p.name) == ["model"]
    store = ModelStore(tmp_path / "store")
    version = store.import_directory("ppm", Path(result.out), Lineage(base_model="test"), move=True)
    assert [v.version for v in store.versions("ppm")] == [version.version]
    from services.ppm.model import ProcessRewardModel

    ProcessRewardModel.from_pretrained(version.path)  # loads as a PPM


def test_a_failing_rank_fails_the_stage_and_leaves_no_result(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, _, pairs = inputs
    out = tmp_path / "bad"
    # An SFT stage given pair rows: every rank refuses its data.
    spec = TrainingSpec.from_json(
        json.dumps(
            {
                "stage": "sft",
                "data": str(pairs),
                "base": str(base),
                "out": str(out),
                "recipe": {"max_steps": 2, "batch_size": 4},
            }
        )
    )
    with pytest.raises(TrainingFailed, match=r"torchrun exited with 1(.|\n)*no steps"):
        LocalLauncher(2).run(spec, name="bad")
    assert not (out / "result.json").exists() and not (out / "model").exists()
