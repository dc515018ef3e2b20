"""Optional progress display: for long sweeps (tqdm when installed, silent otherwise) and
for one long kernel call (``progress=True`` on ``la.causal`` / ``la.noncausal``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def _tqdm():
    try:
        from tqdm import tqdm  # the text bar: tqdm.auto would want ipywidgets in notebooks
    except ImportError:  # the "progress" extra is optional
        return None
    return tqdm


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None,
             enabled: bool | None = None) -> Iterator[T]:
    """Iterate over ``iterable``, showing a tqdm bar on stderr when it helps.

    ``enabled=None`` (default) shows the bar only when tqdm is installed
    (``pip install "linattn[progress]"``) and stderr is a terminal; ``True`` shows it
    whenever tqdm is installed; ``False`` never does.  Without a bar the items are yielded
    unchanged, so the helper can wrap any loop.
    """
    if enabled is False or (enabled is None and not _stderr_is_terminal()):
        return iter(iterable)
    tqdm = _tqdm()
    if tqdm is None:
        return iter(iterable)
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return iter(tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False))




# ------------------------------------------------------- progress of one call --

# Seconds a call runs before its bar appears: shorter calls never show one.
DELAY = 0.5
# Seconds between two updates of the bar.
INTERVAL = 0.2


def _counter():
    """``() -> (done, total)``: the tokens the running kernel call has finished (the
    kernels add each block's tokens where they poll for Ctrl-C) and the tokens it was
    expected to finish (set by :func:`start`)."""
    from . import _core

    return _core._progress


def start(total: int) -> None:
    """Reset the kernels' token counter and set the tokens the next call will finish."""
    from . import _core

    _core._progress_start(int(total))


def expected_tokens(call) -> int | None:
    """Tokens the kernels will count for a built call: one per query and key position
    (keys once more for non-causal calls) of every (batch, head) slice; None for kinds
    whose kernels keep no count (their bar shows the elapsed time)."""
    if not call.spec.progress:
        return None
    batch = np.broadcast_shapes(call.q.shape[:-2], call.k.shape[:-2], call.v.shape[:-2])
    per_slice = call.q.shape[-2] + (call.k.shape[-2] if call.entry == "noncausal" else 0)
    return int(np.prod(batch, dtype=np.int64)) * per_slice


class call_progress:
    """A context manager showing the progress of one long kernel call on stderr.

    A watcher thread wakes every :data:`INTERVAL` seconds while the call runs (the
    kernels release the GIL).  After :data:`DELAY` seconds it shows a tqdm bar (or,
    without tqdm, a plain ``\\r`` line) of the tokens done out of ``total`` (the
    kernels' counter, reset on entry); with ``total=None`` it shows the elapsed time.
    Nothing is shown for calls that end sooner, and nothing runs at all unless
    ``progress=True`` was passed.
    """

    def __init__(self, desc: str, total: int | None = None, file=None) -> None:
        self.desc = desc
        self.total = total
        self.file = sys.stderr if file is None else file
        self._stop = None
        self._thread = None
        self._bar = None
        self._shown = False

    def __enter__(self):
        import threading
        import time

        if self.total:
            start(self.total)
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        import time

        counter = _counter() if self.total else None
        if self._stop.wait(DELAY):
            return
        while True:
            if counter is not None:
                done, total = counter()
                done = min(done, total)
            else:
                done = total = None
            self._show(done, total, time.perf_counter() - self._t0)
            if self._stop.wait(INTERVAL):
                return

    def _show(self, done, total, elapsed: float) -> None:
        self._shown = True
        tqdm = _tqdm()
        if tqdm is not None:
            if self._bar is None:
                fmt = {} if done is not None else {"bar_format": "{desc}: running {elapsed}"}
                self._bar = tqdm(total=total or None, desc=self.desc, file=self.file,
                                 leave=False, unit="token", unit_scale=True, **fmt)
            if done is not None:
                self._bar.n = done
            self._bar.refresh()
            return
        if done is not None and total:
            text = f"{self.desc}: {100 * done // total}% ({done}/{total} tokens)"
        else:
            text = f"{self.desc}: running {elapsed:.1f} s"
        self.file.write("\r" + text)
        self.file.flush()

    def __exit__(self, *exc) -> None:
        import time

        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()
        elif self._shown:
            self.file.write(f"\r{self.desc}: done in {time.perf_counter() - self._t0:.1f} s\n")
            self.file.flush()


__all__ = ["progress", "call_progress"]
