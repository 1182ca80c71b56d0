"""Progress of long work (encoding a prototype database, predicting a split).

Nothing is shown for work that ends within a few seconds. After that: a bar on a
terminal, one line every few seconds in a file or a pipe, and a closing line.
"""

import sys
import time
from typing import Callable, Iterable, Iterator, TextIO


class WorkProgress:
    """Counts items of `total` done under `description` and shows it on `stream`.

    Args:
      description: what is being done ("encoding the prototype database").
      total: the number of items (examples) of the whole work.
      stream: where to show it (default: standard output).
      quiet_seconds: nothing is shown before this much time has passed.
      line_seconds: in a file or a pipe, the time between two lines.
      clock: a monotonic clock in seconds (tests give their own).
    """

    def __init__(
        self,
        description: str,
        total: int,
        stream: TextIO | None = None,
        quiet_seconds: float = 5.0,
        line_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.description = description
        self.total = int(total)
        self.stream = stream or sys.stdout
        self.quiet_seconds = quiet_seconds
        self.line_seconds = line_seconds
        self.clock = clock
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = clock()
        self.done = 0
        self.shown = False
        self._last_line = None

    def advance(self, count: int) -> None:
        """Records `count` more items done; shows the state when it is time to."""
        self.done += int(count)
        now = self.clock()
        if now - self.start < self.quiet_seconds:
            return
        if self.terminal:
            self._write(f"\r{self._state(now)}", end="")
        elif self._last_line is None or now - self._last_line >= self.line_seconds:
            self._write(self._state(now))
            self._last_line = now
        self.shown = True

    def finish(self) -> None:
        """Ends the work: a closing line when anything was shown."""
        if self.shown:
            elapsed = self.clock() - self.start
            text = f"{self.description}: {self.done:,} of {self.total:,} examples in {elapsed:.0f} s."
            self._write(f"\r{text}" if self.terminal else text)

    def _state(self, now):
        share = 100.0 * self.done / self.total if self.total else 100.0
        return f"{self.description}: {self.done:,}/{self.total:,} examples ({share:.0f} %, {now - self.start:.0f} s)"

    def _write(self, text, end="\n"):
        print(text, end=end, file=self.stream, flush=True)


def tracked(batches: Iterable, progress: WorkProgress | None, size: Callable) -> Iterator:
    """`batches` as they are, advancing `progress` (when given) by `size(batch)` after
    each and finishing it at the end."""
    for batch in batches:
        yield batch
        if progress is not None:
            progress.advance(size(batch))
    if progress is not None:
        progress.finish()
