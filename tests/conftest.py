"""Shared fixtures: a seeded RNG and input factories (bottleneck's array zoo idea)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la

TOL = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_qkv(rng, batch=(2, 3), T=20, D=8, E=None, S=None, dtype=np.float64, scale=1.0):
    E = D + 3 if E is None else E
    S = T if S is None else S
    q = (scale * rng.standard_normal(batch + (T, D))).astype(dtype)
    k = (scale * rng.standard_normal(batch + (S, D))).astype(dtype)
    v = rng.standard_normal(batch + (S, E)).astype(dtype)
    return q, k, v


def assert_close(actual, desired, dtype):
    la.testing.assert_close(actual, desired, rtol=TOL[np.dtype(dtype).type])


# Counters for the reliability closing note: bad inputs tried, fuzz cases run.
COUNTS: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        parts = ", ".join(f"{v} {k}" for k, v in sorted(COUNTS.items()))
        terminalreporter.write_line(f"linattn reliability counts: {parts}")
