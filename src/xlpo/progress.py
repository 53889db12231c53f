"""Progress of long jobs: the stage, step/total, rate and ETA, as a live bar on a terminal and as
plain lines (the start, every ~10%, the end) when the output goes to a log or CI.

Every long command reports through `Progress`; XLPO_PROGRESS=bar|lines|off overrides the choice.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

from xlpo.errors import UserError

MODES = ("auto", "bar", "lines", "off")
ENV = "XLPO_PROGRESS"

# One live display at a time (rich allows no more): a stage opened inside another adds its own line to it.
_display: RichProgress | None = None
_open_stages = 0
_display_lock = threading.Lock()


def choose_mode(stream, bar: bool = True) -> str:
    """bar on a terminal (unless `bar` is off), lines elsewhere; XLPO_PROGRESS decides when set."""
    chosen = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if chosen not in MODES:
        raise UserError(f"{ENV}: expected one of {', '.join(MODES)}, got {chosen!r}")
    if chosen != "auto":
        return chosen
    return "bar" if bar and _is_terminal(stream) else "lines"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def clock(seconds: float) -> str:
    """H:MM:SS."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def rate_text(rate: float, unit: str) -> str:
    """'2.50 pairs/s', or for slow stages '4.0 s/step'."""
    if rate <= 0:
        return f"- {unit}/s"
    if rate >= 1:
        return f"{rate:.2f} {unit}/s"
    return f"{1 / rate:.1f} s/{unit[:-1] if unit.endswith('s') else unit}"


class Progress:
    """One stage of `total` units: `with Progress("train dpo", 100, "steps") as p: ... p.advance()`.

    `start` units are already done (a resumed run); the rate and ETA count only what this run does.
    `enabled=False` shows nothing (e.g. on every process but the main one); `bar=False` asks for the
    plain lines also on a terminal. Thread-safe: backends may advance it from worker threads.
    """

    def __init__(self, stage: str, total: int, unit: str = "steps", start: int = 0, *, enabled: bool = True,
                 bar: bool = True, stream=None):
        self.stage, self.total, self.unit = stage, max(int(total), 0), unit
        self.start = self.done = min(max(int(start), 0), self.total)
        self.stream = stream if stream is not None else sys.stderr
        self.mode = choose_mode(self.stream, bar) if enabled else "off"
        self.info = ""
        self._lock = threading.Lock()
        self._task = None
        self._tenths = self.done * 10 // self.total if self.total else 10
        self._began = time.monotonic()

    # -- numbers --------------------------------------------------------------------------------
    def rate(self) -> float:
        return (self.done - self.start) / max(time.monotonic() - self._began, 1e-9)

    def eta(self) -> str:
        rate = self.rate()
        return clock((self.total - self.done) / rate) if rate > 0 else "-:--:--"

    def status(self) -> str:
        """'37/100 steps (37%), 1.20 steps/s, ETA 0:00:52 | loss 0.6931' (what a log line says)."""
        pct = 100 * self.done // self.total if self.total else 100
        line = f"{self.stage}: {self.done}/{self.total} {self.unit} ({pct}%), {rate_text(self.rate(), self.unit)}, ETA {self.eta()}"
        return line + (f" | {self.info}" if self.info else "")

    # -- display --------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._began = time.monotonic()
        if self.mode == "lines":
            resumed = f" ({self.start} done before)" if self.start else ""
            self._print(f"{self.stage}: {self.total} {self.unit}{resumed}")
        elif self.mode == "bar":
            self._task = _open_bar(self)
        return self

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """`n` more units are done; `info` (e.g. 'loss 0.69') is shown beside the numbers."""
        with self._lock:
            self.done = min(self.done + n, self.total)
            if info is not None:
                self.info = info
            if self.mode == "bar" and self._task is not None:
                _display.update(self._task, completed=self.done, rate=rate_text(self.rate(), self.unit),
                                eta=f"ETA {self.eta()}", info=self.info)
            elif self.mode == "lines" and self.total:
                tenths = self.done * 10 // self.total
                if tenths > self._tenths and self.done < self.total:
                    self._print(self.status())
                self._tenths = tenths

    def reach(self, done: int) -> None:
        """At least `done` units are done (for work whose own reports may be missing or coarser)."""
        if done > self.done:
            self.advance(done - self.done)

    def __exit__(self, exc_type, *exc) -> None:
        if self.mode == "lines":
            how = "done" if self.done >= self.total else "stopped"
            self._print(f"{self.stage}: {how} at {self.done}/{self.total} {self.unit} in {clock(time.monotonic() - self._began)} "
                        f"({rate_text(self.rate(), self.unit)})" + (f" | {self.info}" if self.info else ""))
        elif self.mode == "bar" and self._task is not None:
            _close_bar(self._task, "done" if self.done >= self.total else "stopped")
            self._task = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _open_bar(stage: Progress):
    global _display, _open_stages
    with _display_lock:
        if _display is None:
            _display = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[rate]}"),
                                    TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
                                    TextColumn("{task.fields[info]}"),
                                    console=Console(file=stage.stream), transient=False)
            _display.start()
        _open_stages += 1
        return _display.add_task(stage.stage, total=stage.total, completed=stage.done, unit=stage.unit,
                                 rate="", eta="ETA -:--:--", info="")


def _close_bar(task, outcome: str) -> None:
    global _display, _open_stages
    with _display_lock:
        _open_stages -= 1
        _display.update(task, eta=outcome)
        if _open_stages:
            _display.remove_task(task)  # an inner stage: its outer stage's line stays
        else:
            _display.stop()  # the last line stays on the terminal as the stage's record
            _display = None
