"""An optional progress bar for long sweeps (tqdm when installed, silent otherwise)."""

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


__all__ = ["progress"]
