"""Optional progress display: for long sweeps (tqdm when installed, silent otherwise) and
for one long kernel call (``progress=True`` on ``la.causal`` / ``la.noncausal``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

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
    """``() -> (done, total)`` chunks of the running kernel call, when the extension
    keeps that counter (the one its Ctrl-C polling walks past); else None."""
    from . import _core

    return getattr(_core, "_progress", None)


class call_progress:
    """A context manager showing the progress of one long kernel call on stderr.

    A watcher thread wakes every :data:`INTERVAL` seconds while the call runs (the
    kernels release the GIL).  After :data:`DELAY` seconds it shows a tqdm bar (or,
    without tqdm, a plain ``\\r`` line) fed from the extension's chunk counter; where
    the extension has none, it shows the elapsed time.  Nothing is shown for calls that
    end sooner, and nothing runs at all unless ``progress=True`` was passed.
    """

    def __init__(self, desc: str, file=None) -> None:
        self.desc = desc
        self.file = sys.stderr if file is None else file
        self._stop = None
        self._thread = None
        self._bar = None
        self._shown = False

    def __enter__(self):
        import threading
        import time

        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        import time

        counter = _counter()
        if self._stop.wait(DELAY):
            return
        while True:
            done, total = counter() if counter is not None else (None, None)
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
                                 leave=False, unit="chunk", **fmt)
            if done is not None:
                self._bar.n = done
            self._bar.refresh()
            return
        if done is not None and total:
            text = f"{self.desc}: {100 * done // total}% ({done}/{total} chunks)"
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
