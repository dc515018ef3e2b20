"""kernels/featmap: the elementwise maps in C against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la


@pytest.mark.parametrize("name", ["identity", "elu1", "elu", "relu"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_featmap(rng, name, dtype):
    x = rng.standard_normal((3, 7, 9)).astype(dtype)
    y = getattr(la.features, name)(x, scale=0.7)
    assert y.dtype == dtype and y.shape == x.shape
    want = la.reference.linear.phi(x.astype(np.float64), name, 0.7)
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    la.testing.assert_close(y, want, rtol=tol)
    # strided input
    xs = x[:, ::2, ::-1]
    la.testing.assert_close(getattr(la.features, name)(xs, 0.7),
                            la.reference.linear.phi(xs.astype(np.float64), name, 0.7), rtol=tol)


def test_featmap_out_and_errors(rng):
    x = rng.standard_normal((4, 5))
    out = np.empty_like(x)
    assert la.features.elu1(x, out=out) is out
    with pytest.raises(TypeError, match="x must be a float32"):
        la.features.relu(np.ones(3, dtype=int))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        la.features.relu(x, scale=0)
