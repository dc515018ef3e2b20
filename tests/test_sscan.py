"""la.selective_scan (docs/design/kinds.md §10) against a straightforward NumPy loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import linattn as la
from conftest import assert_close

Bb, DC, N, L = 2, 6, 5, 37


def inputs(rng, form_b="tv", form_c="tv", G=2, dtype=np.float64):
    u = rng.standard_normal((Bb, DC, L))
    delta = rng.uniform(0.01, 0.5, (Bb, DC, L))
    A = -rng.uniform(0.1, 2.0, (DC, N))
    forms = {"tv": (DC, N), "var": (Bb, N, L), "grp": (Bb, G, N, L)}
    B = rng.standard_normal(forms[form_b])
    C = rng.standard_normal(forms[form_c])
    return [x.astype(dtype) for x in (u, delta, A, B, C)]


OPTS = list(itertools.product([False, True], repeat=4))  # D, z, delta_bias, softplus


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("fb,fc", [("tv", "tv"), ("var", "var"), ("grp", "grp"),
                                   ("tv", "var"), ("var", "grp")])
@pytest.mark.parametrize("hasD,hasz,hasb,sp", OPTS,
                         ids=["".join("Dzbs"[i] if f else "-" for i, f in enumerate(o))
                              for o in OPTS])
def test_matches_numpy_loop(rng, dtype, fb, fc, hasD, hasz, hasb, sp):
    u, delta, A, B, C = inputs(rng, fb, fc, dtype=dtype)
    kw = dict(D=rng.standard_normal(DC).astype(dtype) if hasD else None,
              z=rng.standard_normal((Bb, DC, L)).astype(dtype) if hasz else None,
              delta_bias=rng.uniform(-1, 1, DC).astype(dtype) if hasb else None,
              delta_softplus=sp)
    out, last = la.selective_scan(u, delta, A, B, C, return_state=True, **kw)
    ro, rl = la.reference.selective_scan(u, delta, A, B, C, return_state=True, **kw)
    assert out.dtype == dtype and out.shape == (Bb, DC, L) and last.shape == (Bb, DC, N)
    assert_close(out, ro, dtype)
    assert_close(last, rl, dtype)


def test_groups_mixed_and_strided(rng):
    u, delta, A, _, _ = inputs(rng)
    B = rng.standard_normal((Bb, 3, N, L))
    C = rng.standard_normal((Bb, 2, N, L))
    assert_close(la.selective_scan(u, delta, A, B, C),
                 la.reference.selective_scan(u, delta, A, B, C), np.float64)
    # non-contiguous inputs, channel-last storage
    uf = np.asfortranarray(u)
    Bs = rng.standard_normal((Bb, N, 2 * L))[..., ::2]
    assert_close(la.selective_scan(uf, delta, A, Bs, Bs),
                 la.reference.selective_scan(u, delta, A, Bs, Bs), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("split", [1, 10, 36])
def test_state_carry(rng, dtype, split):
    u, delta, A, B, C = inputs(rng, "var", "grp", dtype=dtype)
    z = rng.standard_normal((Bb, DC, L)).astype(dtype)
    kw = dict(D=np.ones(DC, dtype), delta_softplus=True)
    full, last = la.selective_scan(u, delta, A, B, C, z=z, return_state=True, **kw)
    o1, s1 = la.selective_scan(u[..., :split], delta[..., :split], A, B[..., :split],
                               C[..., :split], z=z[..., :split], return_state=True, **kw)
    o2, s2 = la.selective_scan(u[..., split:], delta[..., split:], A, B[..., split:],
                               C[..., split:], z=z[..., split:], initial_state=s1,
                               return_state=True, **kw)
    assert_close(np.concatenate([o1, o2], -1), full, dtype)
    assert_close(s2, last, dtype)


def test_euler_discretisation_pinned():
    """B is discretised by Euler (dt B), as the reference, not exact ZOH
    ((exp(dt A) - 1)/A B): they differ by about dt|A|/2 relative."""
    dt, A = 1e-3, -1.0
    u = np.ones((1, 1, 1))
    out = la.selective_scan(u, np.full((1, 1, 1), dt), np.array([[A]]), np.ones((1, 1)),
                            np.ones((1, 1)))
    assert out[0, 0, 0] == pytest.approx(dt, rel=1e-15)
    zoh = (np.exp(dt * A) - 1) / A
    assert abs(out[0, 0, 0] - zoh) / zoh == pytest.approx(5e-4, rel=1e-2)


def test_float16_and_threads(rng):
    u, delta, A, B, C = inputs(rng, "var", "var", dtype=np.float16)
    out = la.selective_scan(u, delta, A, B, C)
    assert out.dtype == np.float16
    ref = la.selective_scan(*(x.astype(np.float32) for x in (u, delta, A, B, C)))
    la.testing.assert_close(out, ref, rtol=1e-3)
    u, delta, A, B, C = inputs(rng, "var", "var")
    n = la.get_num_threads()
    try:
        la.set_num_threads(1)
        one = la.selective_scan(u, delta, A, B, C)
        la.set_num_threads(2)
        two = la.selective_scan(u, delta, A, B, C)
    finally:
        la.set_num_threads(n)
    np.testing.assert_array_equal(one, two)


def test_errors(rng):
    u, delta, A, B, C = inputs(rng, "var", "var")
    with pytest.raises(ValueError, match="A must be real and <= 0"):
        la.selective_scan(u, delta, -A, B, C)
    with pytest.raises(ValueError, match="A must be real and <= 0"):
        la.selective_scan(u, delta, np.where(A < -1, np.nan, A), B, C)
    with pytest.raises(TypeError, match="A must be real"):
        la.selective_scan(u, delta, A + 1j, B, C)
    with pytest.raises(ValueError, match="delta has shape"):
        la.selective_scan(u, delta[..., :-1], A, B, C)
    with pytest.raises(ValueError, match="A has 5 channels"):
        la.selective_scan(u, delta, A[:5], B, C)
    with pytest.raises(ValueError, match="B must have shape"):
        la.selective_scan(u, delta, A, B[..., :-1], C)
    with pytest.raises(ValueError, match="C has G = 4"):
        la.selective_scan(u, delta, A, B, np.zeros((Bb, 4, N, L)))
    with pytest.raises(ValueError, match="time-invariant B"):
        la.selective_scan(u, delta, A, np.zeros((DC, N + 1)), C)
    with pytest.raises(ValueError, match="D must have shape"):
        la.selective_scan(u, delta, A, B, C, D=np.ones(DC + 1))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        la.selective_scan(u, delta, A, B, C, initial_state=np.zeros((Bb, DC)))
    with pytest.raises(TypeError, match="u must be"):
        la.selective_scan(u.astype(int), delta, A, B, C)
    with pytest.raises(ValueError, match="u must have shape"):
        la.selective_scan(u[0], delta, A, B, C)
