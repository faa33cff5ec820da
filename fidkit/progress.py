"""A small progress bar on stderr: items done, items per second, and the ETA when the total is known.

Items are images by default; the weights download counts bytes and shows them in MiB.

No dependency: one line redrawn with a carriage return, at most a few times per second, and nothing at all
when the stream is not a terminal (logs and CI output stay clean) or when the caller asks for quiet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar", "format_duration"]

_BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """Format a duration as ``M:SS`` or ``H:MM:SS``.

    Parameters
    ----------
    seconds : float
        A duration; negative values are shown as zero.

    Returns
    -------
    str
        The formatted duration.
    """
    total_seconds = max(0, int(round(seconds)))
    hours, rest = divmod(total_seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class ProgressBar:
    """Progress of a run over images (or bytes, or any countable unit), drawn on one terminal line.

    Parameters
    ----------
    total : int or None
        How many items the run will process; ``None`` when unknown (an iterable of batches).
        With a total the line shows a bar, a percentage and the ETA.
    desc : str
        A short label drawn before the counts (e.g. the source's name).
    enabled : bool or None
        ``None`` (default) draws only when `stream` is a terminal; ``True`` always draws; ``False``
        never draws.
    stream : text stream or None
        Where to draw; ``None`` means ``sys.stderr`` at construction time.
    min_interval : float
        Seconds between redraws. Updates in between only count, so a fast loop pays almost nothing.
    clock : callable
        Returns the time in seconds; injectable for tests.
    unit : str
        The name shown for the items, e.g. ``"images"`` or ``"MiB"``.
    unit_scale : int
        Items per shown unit: counts are divided by it for display (``2**20`` shows bytes as MiB
        with one decimal). With 1, counts are shown as integers.

    Examples
    --------
    >>> with ProgressBar(total=100, enabled=False) as bar:
    ...     for _ in range(10):
    ...         bar.update(10)
    >>> bar.done
    100
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "images",
        unit_scale: int = 1,
    ) -> None:
        self.total = total
        self.unit = unit
        self.unit_scale = unit_scale
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.min_interval = min_interval
        self._clock = clock
        self.done = 0
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn_width = 0
        self._drawn_done = -1
        self._closed = False

    def update(self, n_items: int) -> None:
        """Count `n_items` more items done and redraw if the last redraw is old enough."""
        self.done += int(n_items)
        if not self.enabled:
            return
        now = self._clock()
        if self._last_draw is not None and now - self._last_draw < self.min_interval:
            return
        self._draw(now)

    def render(self, now: float | None = None) -> str:
        """Return the text of the progress line at time `now` (the clock's current time if None)."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        parts = [self.desc] if self.desc else []
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(round(fraction * _BAR_WIDTH))
            parts.append("[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]")
            parts.append(f"{self._amount(self.done)}/{self._amount(self.total)} {self.unit}")
            parts.append(f"{100.0 * fraction:5.1f}%")
        else:
            parts.append(f"{self._amount(self.done)} {self.unit}")
        parts.append(f"{rate / self.unit_scale:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
        return " ".join(parts)

    def _amount(self, count: int) -> str:
        return str(count) if self.unit_scale == 1 else f"{count / self.unit_scale:.1f}"

    def _draw(self, now: float) -> None:
        line = self.render(now)
        # Pad with spaces so a shorter line fully covers the previous one.
        padding = " " * max(0, self._drawn_width - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._drawn_width = len(line)
        self._drawn_done = self.done
        self._last_draw = now

    def close(self) -> None:
        """Draw the final state and end the line (only if anything was drawn). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.enabled and (self._last_draw is not None or self.done):
            if self._drawn_done != self.done:  # the last redraw may already show the final count
                self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
