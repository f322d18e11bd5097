"""A command's output, read as it comes: log lines, `GPULAB {json}` reports, progress bars.

stdout and stderr arrive merged, as bytes. Lines end at `\\n`; a progress bar (tqdm's, or any
that rewrites its line with `\\r`) becomes the job's progress instead of hundreds of log lines:
`12/100 [` (tqdm's count) or `12/100` alone on a `\\r` line is read as step 12 of 100.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from jobs.base import JobContext

PREFIX = "GPULAB "
MAX_LINE = 4000
# tqdm: "epoch 1:  40%|████      | 4/10 [00:01<00:02, 3.9it/s]"
_TQDM = re.compile(r"(\d+)/(\d+)\s*\[")
# A whole tqdm bar, up to the bracket that closes its times, rate and postfix.
_TQDM_BAR = re.compile(r"\d+/\d+\s*\[[^\]]*\]")
_BARE = re.compile(r"(?<![\d/])(\d+)\s*/\s*(\d+)(?![\d/])")
_OOM_MARKS = ("CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError")
PROGRESS_EVERY_S = 0.25


@dataclass
class OutputReader:
    """Feeds a command's output into the job's context and keeps what the end needs."""

    ctx: JobContext
    result: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[str, str | None]] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    oom: bool = False
    _partial: bytes = b""
    _last_progress: tuple[int, int] | None = None
    _progress_at: float = 0.0

    def feed(self, data: bytes) -> None:
        """Take the next bytes of output (any split)."""
        data = self._partial + data
        start = 0
        for match in re.finditer(rb"\r\n|\n|\r", data):
            self._line(data[start:match.start()], bar=match.group() == b"\r")
            start = match.end()
        self._partial = data[start:]
        if len(self._partial) > 64 * MAX_LINE:  # a line without an end: log it in pieces
            self._line(self._partial, bar=False)
            self._partial = b""

    def close(self) -> None:
        """The output ended: flush the last partial line."""
        if self._partial:
            self._line(self._partial, bar=False)
            self._partial = b""

    def _line(self, raw: bytes, *, bar: bool) -> None:
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            return
        report_at = line.find(PREFIX + "{")
        if report_at > 0:
            # A bar redrawn on stderr without a newline, then a report on stdout: two lines.
            self._line(raw[:len(line[:report_at].encode())], bar=True)
            line = line[report_at:]
        elif not bar and (end := _bar_end(line)) is not None:
            # A bar left mid-redraw, then a line of output (a stop's "interrupted at step 13"):
            # the bar's state is progress, the rest a line of its own.
            self._line(raw[:len(line[:end].encode())], bar=True)
            line = line[end:]
        if any(mark in line for mark in _OOM_MARKS):
            self.oom = True
        if line.startswith(PREFIX) and self._report(line[len(PREFIX):]):
            return
        step_total = _progress_in(line, bar=bar)
        if step_total is not None:
            self._progress(*step_total)
            if bar:
                return  # a redrawn bar: its last state is logged when its line ends
        self.tail.append(line[:MAX_LINE])
        self.ctx.log(line[:MAX_LINE])

    def _report(self, text: str) -> bool:
        try:
            msg = json.loads(text)
            if "progress" in msg:
                step, total = msg["progress"]
                self._progress(int(step), int(total), force=True)
            elif "metric" in msg:
                m = msg["metric"]
                self.ctx.metric(str(m["name"]), float(m["value"]), None if m.get("step") is None else int(m["step"]))
            elif "result" in msg and isinstance(msg["result"], dict):
                self.result.update(msg["result"])
            elif "artifact" in msg and isinstance(msg["artifact"], dict):
                self.artifacts.append((str(msg["artifact"]["path"]), msg["artifact"].get("name")))
            else:
                return False
        except (ValueError, KeyError, TypeError):
            return False  # not a report after all: keep it as output
        return True

    def _progress(self, step: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if (step, total) == self._last_progress:
            return
        # A fast bar redraws many times a second: one event per quarter second, and the last.
        if not force and step < total and now - self._progress_at < PROGRESS_EVERY_S:
            return
        self._last_progress, self._progress_at = (step, total), now
        self.ctx.progress(step, total)


def _progress_in(line: str, *, bar: bool) -> tuple[int, int] | None:
    match = _TQDM.search(line) or (_BARE.search(line) if bar else None)
    if not match:
        return None
    step, total = int(match.group(1)), int(match.group(2))
    return (step, total) if 0 <= step <= total and total > 0 else None


def _bar_end(line: str) -> int | None:
    """Where a tqdm bar that more output follows on the same line ends, or None."""
    ends = [m.end() for m in _TQDM_BAR.finditer(line)]
    if not ends or not line[ends[-1]:].strip():
        return None
    return ends[-1]
