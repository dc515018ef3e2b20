"""``la.testing``: the comparison the test suite uses (docs/design/family.md §10)."""

from __future__ import annotations

import numpy as np


def relative_rms(actual, desired) -> float:
    """``||actual - desired||_2 / ||desired||_2`` over the whole array (in float64)."""
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    den = np.linalg.norm(d.ravel())
    num = np.linalg.norm((a - d).ravel())
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return float(num / den)


def assert_close(actual, desired, rtol: float = 1e-5, atol: float = 0.0, *,
                 err_msg: str = "") -> None:
    """Assert ``relative_rms(actual, desired) <= rtol`` (or max abs error <= atol).

    Fails when the shapes differ, or a non-finite value appears where ``desired`` is
    finite.  The report gives the relative RMS error, the max absolute error and the
    index of the worst element.
    """
    a = np.asarray(actual)
    d = np.asarray(desired)
    if a.shape != d.shape:
        raise AssertionError(f"shape mismatch: actual {a.shape} vs desired {d.shape}. {err_msg}")
    if a.size == 0:
        return
    a64 = a.astype(np.float64)
    d64 = d.astype(np.float64)
    bad = ~np.isfinite(a64) & np.isfinite(d64)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), a.shape)
        raise AssertionError(f"non-finite value {a64[idx]} at index {idx} where desired is "
                             f"{d64[idx]}. {err_msg}")
    same_nonfinite = ~np.isfinite(d64) & (np.isnan(d64) == np.isnan(a64)) & \
        ((a64 == d64) | np.isnan(d64))
    diff = np.where(same_nonfinite, 0.0, np.abs(a64 - d64))
    worst = np.unravel_index(int(np.argmax(diff)), a.shape)
    max_abs = float(diff[worst])
    fin = np.isfinite(d64)
    err = relative_rms(np.where(fin, a64, 0), np.where(fin, d64, 0))
    if err <= rtol or max_abs <= atol:
        return
    raise AssertionError(
        f"relative RMS error {err:.3e} > rtol {rtol:.1e} (max abs error {max_abs:.3e} at "
        f"index {worst}: actual {a64[worst]!r}, desired {d64[worst]!r}). {err_msg}")


def tolerance(dtype) -> float:
    """docs/design/family.md's tolerance on relative RMS error for a kernel dtype."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return 1e-10
    if dt == np.float32:
        return 1e-5
    return 1e-3
