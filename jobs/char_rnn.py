"""char-rnn: a character-level LSTM (or GRU) language model, the classic poem writer.

It trains on a text (Shakespeare's sonnets, shipped with gpulab, or `text_path` on the lab's
disk), reports the validation perplexity beside the unigram baseline of the same text (a
model that only knows how often each character occurs), and writes samples from a start
string. The char-rnn-sample kind writes more from the trained model later.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobError, JobKind
from jobs.common import DataPath, save_figure, seed_everything, torch_device

BUNDLED_TEXT = Path(__file__).parent / "data" / "sonnets.txt"
MAX_TEXT_BYTES = 64 * 2**20


class SampleParams(BaseModel):
    """How samples are drawn: shared with the char-rnn-sample kind."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(default="Shall I ", min_length=1, max_length=1000, description="the prompt")
    temperature: float = Field(default=0.8, ge=0.0, le=5.0, description="0: always the likeliest character")
    sample_length: int = Field(default=400, ge=1, le=20_000, description="characters after the prompt")
    num_samples: int = Field(default=2, ge=1, le=16)


class Params(SampleParams):
    text_path: DataPath | None = Field(default=None, description="UTF-8 text; None: Shakespeare's sonnets")
    cell: Literal["lstm", "gru"] = "lstm"
    embed: int = Field(default=32, ge=2, le=1024)
    hidden: int = Field(default=128, ge=8, le=4096)
    layers: int = Field(default=1, ge=1, le=4)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    seq_len: int = Field(default=64, ge=2, le=2048)
    batch_size: int = Field(default=32, ge=1, le=4096)
    steps: int = Field(default=250, ge=1, le=1_000_000)
    lr: float = Field(default=5e-3, gt=0.0, le=1.0, description="Adam, decayed to a tenth by the last step")
    grad_clip: float = Field(default=1.0, gt=0.0, le=100.0)
    val_fraction: float = Field(default=0.1, ge=0.01, le=0.5, description="the text's tail, held out")
    eval_every: int = Field(default=50, ge=1, le=1_000_000)


def load_text(text_path: str | None) -> tuple[str, str]:
    """(text, its name): the file at text_path, or the bundled sonnets."""
    path = BUNDLED_TEXT if text_path is None else Path(text_path)
    if not path.is_file():
        raise JobError(f"text_path {text_path} is not a readable file on this server")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise JobError(f"text_path {text_path} is over {MAX_TEXT_BYTES // 2**20} MiB: train on a part of it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise JobError(f"text_path {text_path} is not UTF-8 text (byte {e.start})") from None
    return text, "sonnets" if text_path is None else path.name


def make_data(text: str, p: Params, device: Any) -> dict[str, Any]:
    """The text as indices on the device, split into training text and the held-out tail."""
    import torch

    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])
    n_val = max(p.seq_len + 1, int(len(ids) * p.val_fraction))
    if len(ids) - n_val < p.seq_len + 1:
        raise JobError(f"the text has {len(ids)} characters: too few for seq_len {p.seq_len} and a held-out part")
    return {"vocab": vocab, "train": ids[:-n_val].to(device), "val": ids[-n_val:].to(device)}


def unigram_perplexity(train: Any, val: Any, vocab_size: int) -> float:
    """Perplexity on val of character frequencies counted on train (add-one smoothed)."""
    import torch

    counts = torch.bincount(train.cpu(), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[val.cpu()].mean().item())


def train_step(model: Any, opt: Any, sched: Any, data: Any, p: Params, gen: Any) -> float:
    """One Adam step on a batch of random windows of the training text; the mean loss."""
    import torch
    import torch.nn.functional as F

    model.train()
    starts = torch.randint(len(data) - p.seq_len - 1, (p.batch_size,), generator=gen).to(data.device)
    window = data[starts.unsqueeze(1) + torch.arange(p.seq_len + 1, device=data.device)]
    logits, _ = model(window[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def evaluate(model: Any, data: Any, seq_len: int, streams: int = 16) -> float:
    """Mean loss (nats per character) on the held-out text, read in order in a few parallel
    streams that carry their state from one window to the next (as the text itself does)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    per = (len(data) - 1) // streams
    if per < 1:
        streams, per = 1, len(data) - 1
    x = data[: streams * per].view(streams, per)
    y = data[1 : streams * per + 1].view(streams, per)
    total, state = 0.0, None
    with torch.no_grad():
        for at in range(0, per, seq_len):
            logits, state = model(x[:, at : at + seq_len], state)
            total += F.cross_entropy(logits.flatten(0, 1), y[:, at : at + seq_len].flatten(), reduction="sum").item()
    return total / (streams * per)


def generate(model: Any, vocab: str, s: SampleParams, gen: Any, device: Any,
             should_stop: Callable[[], bool] = lambda: False) -> list[str]:
    """num_samples texts that go on from the start string; temperature 0 takes the argmax.
    A cancel ends the text being written (at the next 100 characters) and writes no more."""
    import torch

    unknown = sorted(set(s.start) - set(vocab))
    if unknown:
        raise JobError(f"start has characters the model never saw: {''.join(unknown)!r}; use only {vocab!r}")
    model.eval()
    out = []
    with torch.no_grad():
        for _ in range(s.num_samples):
            x = torch.tensor([[vocab.index(c) for c in s.start]], device=device)
            chars, state = [], None
            for i in range(s.sample_length):
                if i % 100 == 99 and should_stop():
                    break
                logits, state = model(x, state)
                last = logits[0, -1].float().cpu()
                if s.temperature == 0:
                    nxt = int(last.argmax())
                else:
                    nxt = int(torch.multinomial(torch.softmax(last / s.temperature, 0), 1, generator=gen))
                chars.append(vocab[nxt])
                x = torch.tensor([[nxt]], device=device)
            out.append(s.start + "".join(chars))
            if should_stop():
                break
    return out


def write_samples(ctx: JobContext, samples: list[str], s: SampleParams) -> None:
    head = f"# start {s.start!r}, temperature {s.temperature}, seed {ctx.seed}\n"
    ctx.artifact_path("samples.txt", "text/plain").write_text(head + "\n\n----\n\n".join(samples) + "\n")


def plot(ctx: JobContext, losses: list[float], vals: list[tuple[int, float]], unigram: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), [math.exp(x) for x in losses], alpha=0.5, label="train perplexity")
    ax.plot([s for s, _ in vals], [math.exp(v) for _, v in vals], marker=".", label="validation perplexity")
    ax.axhline(unigram, color="grey", ls="--", label="unigram baseline")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()
    save_figure(fig, ctx.artifact_path("perplexity.png", "image/png"))


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.nets import CharRNN

    p = params
    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    text, source = load_text(p.text_path)
    data = make_data(text, p, device)
    vocab = data["vocab"]
    arch = {"net": "CharRNN", "vocab": vocab, "embed": p.embed, "hidden": p.hidden, "layers": p.layers, "cell": p.cell}
    model = CharRNN(len(vocab), p.embed, p.hidden, p.layers, p.cell, p.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    # The rate falls to a tenth by the last step: a char-rnn gains most from the last slow steps.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - 0.9 * min(i, p.steps) / p.steps)
    text_sha = hashlib.sha256(text.encode()).hexdigest()
    step, losses, vals = 0, [], []
    if (state := ctx.resume_state()) is not None:
        if state["data"]["sha256"] != text_sha:
            raise JobError("the text changed since this job's checkpoint was written: submit a new job")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        step, losses, vals = state["step"], list(state["losses"]), [tuple(v) for v in state["vals"]]
        ctx.log(f"resumed from the checkpoint at step {step}")
    unigram = unigram_perplexity(data["train"], data["val"], len(vocab))
    ctx.log(f"{source}: {len(text)} characters, {len(vocab)} distinct; unigram perplexity {unigram:.2f}")

    def checkpoint() -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": gen.get_state(), "step": step, "params": p.model_dump(), "arch": arch,
                    "losses": losses, "vals": vals, "data": {"source": source, "sha256": text_sha}},
                   ctx.checkpoint_path())

    stopped = False
    while step < p.steps:
        if ctx.should_stop():
            stopped = True
            break
        losses.append(train_step(model, opt, sched, data["train"], p, gen))
        step += 1
        ctx.metric("loss", losses[-1], step)
        if step % p.eval_every == 0 or step == p.steps:
            vals.append((step, evaluate(model, data["val"], p.seq_len)))
            ctx.metric("val_loss", vals[-1][1], step)
            ctx.metric("val_perplexity", math.exp(vals[-1][1]), step)
            ctx.progress(step, p.steps, f"step {step}: validation perplexity {math.exp(vals[-1][1]):.2f}")
            checkpoint()
    checkpoint()
    val_loss = evaluate(model, data["val"], p.seq_len)
    samples = generate(model, vocab, p, gen, device, ctx.should_stop)
    write_samples(ctx, samples, p)
    plot(ctx, losses, vals, unigram)
    ctx.log(f"validation perplexity {math.exp(val_loss):.2f} against {unigram:.2f} for the unigram baseline")
    return {
        "source": source,
        "characters": len(text),
        "vocab_size": len(vocab),
        "steps": step,
        "final_train_loss": losses[-1] if losses else None,
        "val_loss": val_loss,
        "val_perplexity": math.exp(val_loss),
        "unigram_perplexity": unigram,
        "ratio_to_unigram": math.exp(val_loss) / unigram,
        "start": p.start,
        "temperature": p.temperature,
        "samples": samples,
        "stopped_early": stopped,
    }


KIND = JobKind(
    name="char-rnn",
    params=Params,
    run=run,
    summary="A character-level LSTM/GRU learns a text (Shakespeare's sonnets) and writes more of it",
)
