"""Progress of the long steps of ``fidkit ttur`` and ``fidkit validate``, on stderr, terminal or not.

A CPU run of either takes minutes to hours. On a terminal a tqdm bar shows it; where stderr is a file or a
pipe (a log, CI, ``nohup``) a bar would be one endless line of carriage returns, so a log line is written
instead, at most every :data:`LINE_INTERVAL_S` seconds: what is done, the rate and the time left. Lines go
through :mod:`logging` at INFO, so ``--quiet`` hides them with the other info messages.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Progress", "LINE_INTERVAL_S", "stderr_is_terminal"]

logger = logging.getLogger(__name__)

#: Seconds between two progress lines when no bar is drawn: often enough to see a run is alive, rarely
#: enough that a log of an hour's run stays readable (about 240 lines).
LINE_INTERVAL_S = 15.0


def stderr_is_terminal() -> bool:
    """True if stderr is a terminal (where a bar can be redrawn in place)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, OSError, ValueError):  # closed, replaced by an object without isatty
        return False


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts work done; shows it as a bar on a terminal, else as a log line every `interval` seconds.

    Parameters
    ----------
    total : int or None
        Units expected (None: unknown; no percentage or time left).
    desc : str
        What is being done, at the start of each line.
    unit : str
        The unit counted (``"img"``, ``"step"``).
    enabled : bool or None
        False: nothing is shown. None or True: a bar on a terminal (when `bar`), lines elsewhere.
    bar : bool
        Allow a tqdm bar on a terminal. False for progress that other log lines interleave with (the
        training loop, whose evaluations log their FID): lines then, on a terminal too.
    initial : int
        Units already done (a resumed run).
    interval : float, optional
        Seconds between two lines; default :data:`LINE_INTERVAL_S`.
    clock : callable
        Monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "img",
        enabled: bool | None = None,
        bar: bool = True,
        initial: int = 0,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self._initial = initial
        self._interval = LINE_INTERVAL_S if interval is None else interval
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._n_at_last_line: int | None = None  # None: no line written yet
        self._bar: Any = None
        self._lines = enabled is not False
        if enabled is not False and bar and stderr_is_terminal():
            from fidkit._streams import progress_bar

            self._bar = progress_bar(
                True, total=total, desc=desc, unit=unit, initial=initial, leave=False, dynamic_ncols=True,
            )
            self._lines = False

    @property
    def draws_bar(self) -> bool:
        """True if a bar is drawn on the terminal (other log lines would break it)."""
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        """Count `n` more units done; write a line when `interval` seconds have passed since the last."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self._lines:
            return
        now = self._clock()
        if now - self._last_line >= self._interval:
            self._last_line, self._n_at_last_line = now, self.n
            logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line: done (of total, percent), rate, time left."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = (self.n - self._initial) / elapsed
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        text = f"{self.desc}: {done}"
        if self.total:
            text += f" ({100.0 * self.n / self.total:.0f}%)"
        text += f", {rate:.3g} {self.unit}/s, {_duration(elapsed)} so far"
        if self.total and rate > 0 and self.n < self.total:
            text += f", about {_duration((self.total - self.n) / rate)} left"
        return text

    def close(self) -> None:
        """Remove the bar; after lines were written, write a last one with the final count."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines and self._n_at_last_line not in (None, self.n):
            logger.info("%s (done)", self.line())
        self._lines = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CountingExtractor:
    """A feature extractor that tells a :class:`Progress` of each batch it computes.

    For statistics made by :func:`fidkit.compute_stats` from a source on disk (cached, so not fed batch by
    batch from here): the extractor is the one thing of the run that sees every batch. Everything else is
    the wrapped extractor's (its weights, metadata and batch size key the cache as before).
    """

    def __init__(self, extractor: Any, progress: Progress) -> None:
        self._extractor = extractor
        self._progress = progress

    def __call__(self, images: Any) -> Any:
        features = self._extractor(images)
        self._progress.update(len(features))
        return features

    def identity(self) -> Any:
        """The wrapped extractor's identity: the statistics are recorded as its, not as this wrapper's (whose
        class name would be compared with the evaluations' extractor and refused)."""
        from fidkit.extractors import identity_of

        return identity_of(self._extractor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)
