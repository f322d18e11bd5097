"""char-rnn-sample: write more text from a finished char-rnn job's model, from a prompt.

A member trains once and writes poems from that model later, as often as they like: this
kind loads the checkpoint of the job named by `from_job` and only samples, so it runs in
seconds. The same seed, prompt and temperature give the same text on the same kind of device.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from jobs.base import JobContext, JobError, JobKind
from jobs.char_rnn import SampleParams, generate, write_samples
from jobs.common import seed_everything, torch_device


class Params(SampleParams):
    from_job: int = Field(ge=1, description="a succeeded char-rnn job")


def load_model(ctx: JobContext, job_id: int, device: Any) -> tuple[Any, dict[str, Any]]:
    """The char-rnn network an earlier job trained, and its checkpoint."""
    from jobs.nets import CharRNN

    try:
        state = ctx.load_job_checkpoint(job_id)
    except FileNotFoundError:
        raise JobError(f"from_job {job_id} left no checkpoint (did it succeed?)") from None
    arch = state.get("arch", {})
    if arch.get("net") != "CharRNN":
        raise JobError(f"from_job {job_id} is not a char-rnn job (its checkpoint holds {arch or 'no arch'})")
    model = CharRNN(len(arch["vocab"]), arch["embed"], arch["hidden"], arch["layers"], arch["cell"])
    model.load_state_dict(state["model"])
    return model.to(device), state


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported (by load_model) inside run(): the API imports this module to list kinds.
    if ctx.should_stop():  # cancelled before it began: not even the checkpoint is read
        return {"from_job": params.from_job, "samples": [], "stopped_early": True}
    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    model, state = load_model(ctx, params.from_job, device)
    vocab = state["arch"]["vocab"]
    source = ctx.checkpoint_source(params.from_job)
    ctx.log(f"sampling from {source}'s {state['arch']['cell']} after {state['step']} steps")
    samples = generate(model, vocab, params, gen, device, ctx.should_stop)
    write_samples(ctx, samples, params)
    return {
        "from_job": params.from_job,
        "trained_steps": state["step"],
        "source": state["data"]["source"],
        "start": params.start,
        "temperature": params.temperature,
        "samples": samples,
        "stopped_early": ctx.should_stop(),
    }


KIND = JobKind(
    name="char-rnn-sample",
    params=Params,
    run=run,
    summary="Write text from a trained char-rnn job's model, from a prompt and a temperature",
    from_job_param="from_job",
)
