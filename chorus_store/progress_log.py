"""One progress style for every stage: a rich bar on a terminal, a periodic log line
otherwise (a batch job's log), and the command line's logging set-up.

A :class:`Meter` counts one stage's work (rows, blocks, windows) and says where it stands:
``build: 12,345/100,000 rows (12.3 %), 45.6 rows/s, elapsed 0:04:30, ETA 0:32:10, oracle
87 % of wall time``. Its lines go through :mod:`logging` (logger ``chorus_store.progress_log``)
every :func:`interval_s` seconds (``CHORUS_STORE_PROGRESS_S``, default 60), terminal or not,
so a ``--log-file`` always has them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from chorus_store.errors import UsageError, WriteError, os_reason

__all__ = [
    "INTERVAL_ENV",
    "Meter",
    "configure_logging",
    "eta_s",
    "interactive",
    "interval_s",
    "progress_line",
    "rate",
]

#: the environment variable holding the seconds between two progress lines in a log
INTERVAL_ENV = "CHORUS_STORE_PROGRESS_S"
_DEFAULT_INTERVAL_S = 60.0
#: how often a terminal's bar recomputes its rate and ETA
_BAR_TICK_S = 1.0
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------------------
# the arithmetic and the line, apart so they can be checked alone
# --------------------------------------------------------------------------------------


def rate(done: int, elapsed_s: float) -> float:
    """Units per second over the whole run so far (0 before any time has passed)."""
    return done / elapsed_s if elapsed_s > 0 else 0.0


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the run's average rate: 0 when all is done, None while nothing
    is (no rate to extrapolate)."""
    if done >= total:
        return 0.0
    speed = rate(done, elapsed_s)
    return (total - done) / speed if speed > 0 else None


def _clock(seconds: float | None) -> str:
    """``H:MM:SS`` (``1 day, 2:03:04`` beyond a day); ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    return str(dt.timedelta(seconds=round(seconds)))


def _speed(value: float) -> str:
    """A rate with three significant digits below 1 (0.0123), one decimal above."""
    return f"{value:,.1f}" if value >= 1 or value == 0 else f"{value:.3g}"


def progress_line(
    stage: str,
    done: int,
    total: int,
    elapsed_s: float,
    *,
    unit: str = "rows",
    busy: tuple[str, float] | None = None,
) -> str:
    """Where a stage stands, as one line.

    ``busy`` is ``(what, seconds)``: the time spent in one part (the oracle's forward
    pass), shown as its share of the wall time.

    >>> progress_line("reduce", 3, 12, 6.0, unit="blocks")
    'reduce: 3/12 blocks (25.0 %), 0.5 blocks/s, elapsed 0:00:06, ETA 0:00:18'
    """
    percent = 100.0 * done / total if total else 100.0
    parts = [
        f"{stage}: {done:,}/{total:,} {unit} ({percent:.1f} %)",
        f"{_speed(rate(done, elapsed_s))} {unit}/s",
        f"elapsed {_clock(elapsed_s)}",
        f"ETA {_clock(eta_s(done, total, elapsed_s))}",
    ]
    if busy is not None and elapsed_s > 0:
        parts.append(f"{busy[0]} {100.0 * busy[1] / elapsed_s:.0f} % of wall time")
    return ", ".join(parts)


def interval_s() -> float:
    """Seconds between two progress lines: ``$CHORUS_STORE_PROGRESS_S``, default 60."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return _DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # NaN included
        raise UsageError(
            f"{INTERVAL_ENV}={raw!r} is not a number of seconds above 0; set it to one "
            f"(e.g. {INTERVAL_ENV}=300) or unset it for a line every "
            f"{_DEFAULT_INTERVAL_S:.0f} s"
        )
    return value


def interactive() -> bool:
    """Whether a person watches: stdout and stderr (where the bar is drawn) are both a
    terminal. Under nohup, SLURM or a pipe they are not, and the log gets lines instead."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


# --------------------------------------------------------------------------------------
# the meter
# --------------------------------------------------------------------------------------


class Meter:
    """Progress of one stage over ``total`` units of work, shown one way everywhere.

    On a terminal (and ``show``) a rich bar: stage, bar, done/total, rate, elapsed, ETA
    and the busy share. Otherwise a :func:`progress_line` on stderr every ``interval``
    seconds (default :func:`interval_s`) and a last one at the end; a stage done within
    its first interval prints none. The log gets every line, a start line too, whatever
    the console shows. :meth:`advance` and :meth:`add_busy` may be called from any thread.

    Parameters
    ----------
    stage
        The stage's name, first word of every line (``"build"``).
    total
        Units to do in this run.
    unit
        What a unit is, plural (``"rows"``, ``"blocks"``).
    show
        Show progress on the console (a bar, or lines on stderr); ``False`` logs the
        lines only at INFO, for a log file or ``-v``.
    busy
        Name of the part whose time :meth:`add_busy` counts (``"oracle"``).

    Examples
    --------
    >>> with Meter("reduce", 3, unit="blocks", show=False) as meter:
    ...     for _ in range(3):
    ...         meter.advance()
    >>> meter.done
    3
    """

    def __init__(
        self,
        stage: str,
        total: int,
        *,
        unit: str = "rows",
        show: bool = True,
        busy: str | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.total, self.unit, self.show = stage, int(total), unit, show
        self.busy_label = busy
        self.interval = interval_s() if interval is None else interval
        self.done = 0
        self.busy_s = 0.0
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Any = None
        self._bar_task: Any = None
        self._spoke = False  # a line went to the console (then the final one does too)

    # -- counting ---------------------------------------------------------------------

    def advance(self, n: int = 1) -> None:
        """``n`` more units done."""
        with self._lock:
            self.done += n
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=self.done, **self._fields())

    def add_busy(self, seconds: float) -> None:
        """``seconds`` more spent in the busy part (the oracle's forward pass)."""
        with self._lock:
            self.busy_s += seconds

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, advancing by one after each."""
        for item in items:
            yield item
            self.advance()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._t0

    def line(self) -> str:
        """Where the stage stands now (:func:`progress_line`)."""
        with self._lock:
            done, busy_s = self.done, self.busy_s
        busy = (self.busy_label, busy_s) if self.busy_label else None
        return progress_line(
            self.stage, done, self.total, self.elapsed_s, unit=self.unit, busy=busy
        )

    # -- showing ----------------------------------------------------------------------

    def __enter__(self) -> Meter:
        self._t0 = self._clock()
        if self.show and interactive():
            self._start_bar()
        self._say(f"{self.stage}: {self.total:,} {self.unit} to do", console=False)
        self._ticker = threading.Thread(
            target=self._tick, name=f"chorus-store-{self.stage}-progress", daemon=True
        )
        self._ticker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=self.done, **self._fields())
            self._bar.stop()
            self._bar = None
        line = self.line()
        if exc_type is None:
            end = "finished "
        else:
            why = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else exc_type.__name__
            end = f"stopped ({why}) at "
        self._say(line.replace(f"{self.stage}: ", f"{self.stage}: {end}", 1), console=self._spoke)

    def _say(self, message: str, *, console: bool = True) -> None:
        # the log file gets every line; the console those no bar shows, once the stage has
        # run for an interval (a quick stage, or one refused at once, stays quiet there)
        shown = console and self.show and self._bar is None
        self._spoke = self._spoke or shown
        log.info(message, extra={"console": shown})

    def _tick(self) -> None:
        # a bar recomputes its rate and ETA every tick; a line every `interval` seconds
        wait = min(self.interval, _BAR_TICK_S) if self._bar is not None else self.interval
        every = max(1, round(self.interval / wait))
        ticks = 0
        while not self._stop.wait(wait):
            ticks += 1
            if self._bar is not None:
                self._bar.update(self._bar_task, **self._fields())
            if ticks % every == 0:
                self._say(self.line())

    def _fields(self) -> dict[str, str]:
        with self._lock:
            done, busy_s = self.done, self.busy_s
        elapsed = self.elapsed_s
        share = f"{self.busy_label} {100.0 * busy_s / elapsed:.0f} %" if self.busy_label else ""
        return {
            "rate": f"{_speed(rate(done, elapsed))} {self.unit}/s",
            "eta": _clock(eta_s(done, self.total, elapsed)),
            "busy": share if elapsed > 0 else "",
        }

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn(f"[bold]{self.stage}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[busy]}"),
            console=Console(stderr=True),
        )
        self._bar.start()
        self._bar_task = self._bar.add_task(self.stage, total=self.total, **self._fields())


# --------------------------------------------------------------------------------------
# the command line's logging
# --------------------------------------------------------------------------------------


class _ConsoleFilter(logging.Filter):
    """What the console shows: records at ``level`` and above, and the meters' lines
    where no bar shows them; never a line the command printed already (``printed``)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "printed", False):
            return False
        return record.levelno >= self.level or bool(getattr(record, "console", False))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``sys.stderr`` as it is at each record (a live rich bar
    redirects it, so a log line lands above the bar, not through it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    *, verbose: bool = False, log_file: str | Path | None = None
) -> Callable[[], None]:
    """The command line's logging: the console (stderr) at WARNING, INFO with
    ``verbose``; ``log_file`` (appended to) at INFO always, with timestamps, so a batch
    job keeps a record. Returns the function that undoes it (the CLI calls it when the
    command ends).

    The console handler is installed only where the root logger has none yet (as
    :func:`logging.basicConfig` does), so a host that set up logging keeps its own.
    """
    root = logging.getLogger()
    package = logging.getLogger("chorus_store")
    saved = (root.level, package.level)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        path = Path(log_file).expanduser()
        try:
            file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        except OSError as exc:
            raise WriteError(
                f"cannot open the log file {path} ({os_reason(exc)}: {exc}); give --log-file "
                f"a path in a directory that exists and that you can write to"
            ) from exc
        file_handler.setLevel(logging.INFO)
        handlers.append(file_handler)
    if not root.handlers:
        console = _Stderr()
        console.addFilter(_ConsoleFilter(logging.INFO if verbose else logging.WARNING))
        handlers.append(console)
        if verbose:
            root.setLevel(logging.INFO)  # other libraries' INFO too, as -v always did
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    # the package's INFO records are made (and reach the log file, or the meters' lines
    # reach the console) whatever the root's level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)

    def undo() -> None:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[0])
        package.setLevel(saved[1])

    return undo
