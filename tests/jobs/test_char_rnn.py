import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.base import JobError
from jobs.char_rnn import KIND, unigram_perplexity
from jobs.char_rnn_sample import KIND as SAMPLE
from jobs.context import LocalContext

# A few steps of a small model: enough for the mechanics, not for the numbers.
TINY = {"hidden": 32, "steps": 6, "eval_every": 3, "seq_len": 16, "batch_size": 8, "sample_length": 40}


@pytest.mark.parametrize(("seed", "setting"), [(0, {}), (1, {"cell": "gru", "hidden": 96})])
def test_perplexity_falls_below_half_the_unigram_baseline(tmp_path: Path, seed: int, setting: dict) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed)
    result = KIND.run(KIND.validate(setting), ctx)
    assert result["source"] == "sonnets" and result["vocab_size"] == 62
    # The sonnets' characters alone: about 23 (4.5 bits a character).
    assert 20 < result["unigram_perplexity"] < 26
    assert result["val_perplexity"] <= 0.5 * result["unigram_perplexity"]
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert ctx.metric_values("val_perplexity")[-1] == pytest.approx(result["val_perplexity"], rel=1e-6)
    assert len(ctx.metric_values("loss")) == 250
    samples = (ctx.dir / "samples.txt").read_text()
    assert all(s.startswith("Shall I ") and s in samples for s in result["samples"])
    assert (ctx.dir / "perplexity.png").stat().st_size > 0


def test_untrained_model_is_no_better_than_the_baseline(ctx: LocalContext) -> None:
    """The check above means something: one step leaves the model near a uniform guess."""
    result = KIND.run(KIND.validate({**TINY, "steps": 1}), ctx)
    assert result["val_perplexity"] > result["unigram_perplexity"]


def test_unigram_baseline_is_the_exponent_of_the_character_entropy() -> None:
    import torch

    train = torch.tensor([0, 0, 0, 1])  # counts 3 and 1, smoothed to 4 and 2
    expected = math.exp(-(math.log(4 / 6) + math.log(2 / 6)) / 2)
    assert unigram_perplexity(train, torch.tensor([0, 1]), 2) == pytest.approx(expected)


def test_temperature_towards_zero_is_deterministic(tmp_path: Path) -> None:
    params = {**TINY, "temperature": 0, "num_samples": 2}
    greedy = [KIND.run(KIND.validate(params), LocalContext(artifacts_root=tmp_path, job_id=i, seed=7)) for i in (1, 2)]
    assert greedy[0]["samples"] == greedy[1]["samples"]
    assert greedy[0]["samples"][0] == greedy[0]["samples"][1]  # argmax: no randomness left at all
    cold = KIND.validate({**params, "temperature": 1e-4})
    colder = KIND.run(cold, LocalContext(artifacts_root=tmp_path, job_id=3, seed=7))
    assert colder["samples"] == greedy[0]["samples"]


def test_a_seed_repeats_its_samples_and_another_seed_does_not(tmp_path: Path) -> None:
    def samples(job_id: int, seed: int) -> list[str]:
        ctx = LocalContext(artifacts_root=tmp_path, job_id=job_id, seed=seed)
        return KIND.run(KIND.validate({**TINY, "temperature": 1.0}), ctx)["samples"]

    first = samples(1, 3)
    assert samples(2, 3) == first
    assert samples(3, 4) != first


class CancelledAfter(LocalContext):
    """A job cancelled after `steps` training steps, as a worker lost mid-run would leave it."""

    def __init__(self, steps: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.polls, self.steps = 0, steps

    def should_stop(self) -> bool:
        self.polls += 1
        return self.polls > self.steps


def test_a_retry_resumes_where_the_checkpoint_left_off(tmp_path: Path) -> None:
    params = KIND.validate({**TINY, "steps": 8, "eval_every": 4})
    straight = KIND.run(params, LocalContext(artifacts_root=tmp_path, job_id=1))
    first = KIND.run(params, CancelledAfter(5, artifacts_root=tmp_path, job_id=2))
    assert first["stopped_early"] is True and first["steps"] == 5
    retry = LocalContext(artifacts_root=tmp_path, job_id=2)
    resumed = KIND.run(params, retry)
    assert "resumed from the checkpoint at step 5" in retry.recorded.logs
    assert len(retry.metric_values("loss")) == 3 and resumed["steps"] == 8
    # Same weights, optimizer, schedule and batch order: the same model as an unbroken run.
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
    assert resumed["samples"] == straight["samples"]


def test_a_retry_refuses_a_changed_text(tmp_path: Path) -> None:
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    params = KIND.validate({**TINY, "text_path": str(text), "start": "the "})
    KIND.run(params, LocalContext(artifacts_root=tmp_path, job_id=1))
    text.write_text("a different text altogether, longer than seq_len\n" * 20)
    with pytest.raises(JobError, match="text changed"):
        KIND.run(params, LocalContext(artifacts_root=tmp_path, job_id=1))


def test_trains_on_a_text_on_the_lab_disk(ctx: LocalContext, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("静夜思 床前明月光 疑是地上霜\n" * 40, encoding="utf-8")
    result = KIND.run(KIND.validate({**TINY, "text_path": str(text), "start": "床前"}), ctx)
    assert result["source"] == "lines.txt" and result["vocab_size"] == len(set(text.read_text()))
    assert result["samples"][0].startswith("床前")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"text_path": "/no/such/file.txt"}, "not a readable file"),
        ({"start": "Zebra"}, "never saw"),  # the sonnets have no capital Z
    ],
)
def test_problems_a_member_can_fix(ctx: LocalContext, raw: dict, message: str) -> None:
    with pytest.raises(JobError, match=message):
        KIND.run(KIND.validate({**TINY, **raw}), ctx)


def test_text_that_is_not_utf8(ctx: LocalContext, tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(JobError, match="not UTF-8"):
        KIND.run(KIND.validate({**TINY, "text_path": str(tmp_path / "latin1.txt")}), ctx)


@pytest.mark.parametrize(
    "raw",
    [
        {"text_path": "relative/poems.txt"},
        {"text_path": "/data/../etc/shadow"},
        {"text_path": "/data/x\u0000y"},
        {"start": ""},
    ],
)
def test_params_refuse_paths_outside_the_rule_and_an_empty_prompt(raw: dict) -> None:
    # Bounds and unknown fields: tests/jobs/test_contract.py, for every kind.
    with pytest.raises(ValidationError):
        KIND.validate(raw)


def test_a_cancel_while_sampling_ends_the_sample(tmp_path: Path) -> None:
    KIND.run(KIND.validate(TINY), LocalContext(artifacts_root=tmp_path, job_id=1))
    ctx = CancelledAfter(1, artifacts_root=tmp_path, job_id=2)  # the first poll passes, the next stops
    result = SAMPLE.run(SAMPLE.validate({"from_job": 1, "sample_length": 5000, "num_samples": 3}), ctx)
    assert result["stopped_early"] is True
    assert len(result["samples"]) == 1 and len(result["samples"][0]) < 200


def test_sample_kind_writes_from_a_finished_job(tmp_path: Path) -> None:
    trained = KIND.run(KIND.validate({**TINY, "temperature": 0}), LocalContext(artifacts_root=tmp_path, job_id=1))
    ctx = LocalContext(artifacts_root=tmp_path, job_id=2, seed=5)
    params = {"from_job": 1, "start": "Shall I ", "temperature": 0, "sample_length": 40, "num_samples": 1}
    result = SAMPLE.run(SAMPLE.validate(params), ctx)
    # The same model, prompt and greedy choice: the trained job's own greedy sample.
    assert result["samples"] == trained["samples"][:1] and result["trained_steps"] == 6
    assert (ctx.dir / "samples.txt").read_text().splitlines()[1:] == result["samples"][0].splitlines()
    warm = {**params, "start": "Love ", "temperature": 1.0, "num_samples": 3}
    again = [SAMPLE.run(SAMPLE.validate(warm), LocalContext(artifacts_root=tmp_path, job_id=j, seed=9)) for j in (3, 4)]
    assert again[0]["samples"] == again[1]["samples"] and len(set(again[0]["samples"])) == 3


def test_sample_kind_refuses_a_job_that_is_not_char_rnn(tmp_path: Path) -> None:
    from jobs.regression import KIND as REGRESSION

    REGRESSION.run(REGRESSION.validate({"steps": 2}), LocalContext(artifacts_root=tmp_path, job_id=1))
    ctx = LocalContext(artifacts_root=tmp_path, job_id=2)
    with pytest.raises(JobError, match="not a char-rnn job"):
        SAMPLE.run(SAMPLE.validate({"from_job": 1}), ctx)
    with pytest.raises(JobError, match="left no checkpoint"):
        SAMPLE.run(SAMPLE.validate({"from_job": 99}), ctx)


@pytest.mark.gpu
def test_on_gpu(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["val_perplexity"] <= 0.5 * result["unigram_perplexity"]
