"""``kind="ra"`` and ``kind="lara"``: randomized attention and linear randomized attention.

Zheng, Wang, Kong, *Linear Complexity Randomized Self-attention Mechanism*, ICML 2022,
arXiv:2204.04667 (docs/design/lara.md).  Both are non-causal (``la.noncausal``); scale ``tau``
(default ``d**-0.5``) enters as ``sqrt(tau)`` on q and k (scaled space).

RA (quadratic, unbiased with ``component="sample"``, ``sampling="sample"``,
``noise_std=1``): a reference and test oracle.  LARA (linear): ``landmarks`` proposals
``N(qbar_c + kbar_c, I)`` from chunk means of the scaled queries and keys over the 1-D
segments of docs/design/lara.md §4.2 (or an explicit ``(qbar, kbar)`` pair of ``(..., C, d)``
scaled-space arrays), ``samples_per_proposal`` samples each (``antithetic`` pairs),
multiple-importance weights ``alpha`` ("opt", the reference code's ``mis-opt`` with
``alpha_coeff``; "bh" balance heuristic; "const"), self-normalised estimate.  Paper
defaults: ``noise_std=1.0``, ``sampling="sample"``; the published code's behaviours are
flags: ``noise_std="code"`` (``d**-0.25``) and ``sampling="mean"`` (``omega = mu``).
``grid=`` (2-D pooling) is not implemented yet and raises ``NotImplementedError``;
causal LARA (docs/design/lara.md §5) is not offered.

Randomness is drawn in Python with ``numpy.random.default_rng(seed)`` (default 0) over
the broadcast batch shape, or passed explicitly: LARA ``noise (..., C*R, d)``
(proposal-major rows ``c*R + rho``); RA ``uniforms (..., N, S)`` then
``noise (..., N, S, d)`` (each drawn only when needed).  The kernels are deterministic.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _validate as val
from .._call import Call
from .._draws import lara_noise, ra_draws

ALPHAS = {"opt": 0, "bh": 1, "const": 2}
COMPONENTS = {"sample": 0, "mean": 1, "keymean": 2}
SAMPLINGS = ("sample", "mean")


def _int(name, x, lo=1):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    return int(x)


def _sigma(noise_std, d):
    if noise_std == "code":
        return d ** -0.25
    if isinstance(noise_std, str):
        raise ValueError(f"noise_std must be a number > 0 or 'code', got {noise_std!r}")
    return val.positive_number("noise_std", noise_std)


def _explicit(name, x, shape, batch, dtype=None):
    a = val.array(name, x) if dtype is None else np.asarray(x, dtype=dtype)
    if a.ndim < len(shape) or a.shape[a.ndim - len(shape):] != shape:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got "
                         f"{a.shape}")
    try:
        np.broadcast_shapes(a.shape[:a.ndim - len(shape)], batch)
    except ValueError:
        raise ValueError(f"{name} batch dimensions {a.shape[:a.ndim - len(shape)]} do not "
                         f"broadcast against the inputs' {batch}") from None
    return a


def _segmean(x: np.ndarray, C: int) -> np.ndarray:
    """Means over the 1-D segments of docs/design/lara.md §4.2 along axis -2 (C <= length)."""
    L = x.shape[-2]
    g = L // C
    if L % C == 0:
        return x.reshape(x.shape[:-2] + (C, g, x.shape[-1])).mean(-2)
    n_short = (g + 1) * C - L
    sizes = np.array([g] * n_short + [g + 1] * (C - n_short))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.add.reduceat(x, starts, axis=-2) / sizes[:, None]


def _inputs(call: Call):
    if call.dims.S < 1:
        raise ValueError("k must have at least one token")
    return call.q, call.k, call.v, call.dims, call.comp, call.scale, call.seed


def lara_forward(call: Call, options: dict):
    """la.noncausal(q, k, v, kind="lara", ...): see the module docstring and
    docs/design/lara.md §4."""
    q, k, v, dims, comp, tau, seed = _inputs(call)
    d, N, M, batch = dims.D, dims.T, dims.S, dims.batch
    alpha = val.choice("alpha", options["alpha"], tuple(ALPHAS))
    sampling = val.choice("sampling", options["sampling"], SAMPLINGS)
    acoef = float(options["alpha_coeff"])
    if not np.isfinite(acoef):
        raise ValueError(f"alpha_coeff must be finite, got {options['alpha_coeff']!r}")
    sigma = _sigma(options["noise_std"], d)
    R = _int("samples_per_proposal", options["samples_per_proposal"])
    anti = bool(options["antithetic"])
    if anti and R % 2:
        raise ValueError(f"antithetic=True needs an even samples_per_proposal, got {R}")
    if options["grid"] is not None:
        raise NotImplementedError("grid= (2-D pooled landmarks, docs/design/lara.md §4.2) is not "
                                  "implemented yet; pool the landmarks yourself and pass "
                                  "landmarks=(qbar, kbar)")
    s = np.sqrt(tau)
    lm = options["landmarks"]
    if isinstance(lm, (tuple, list)):
        if len(lm) != 2:
            raise ValueError("landmarks must be an int or a pair (qbar, kbar) of (..., C, d) "
                             "arrays")
        qbar = val.array("landmarks[0]", lm[0])
        if qbar.ndim < 2 or qbar.shape[-1] != d or qbar.shape[-2] < 1:
            raise ValueError(f"landmarks[0] must have shape (..., C, {d}) with C >= 1, got "
                             f"{qbar.shape}")
        kbar = _explicit("landmarks[1]", lm[1], qbar.shape[-2:], batch)
        _explicit("landmarks[0]", qbar, qbar.shape[-2:], batch)
        qbar, kbar = qbar.astype(np.float64), kbar.astype(np.float64)
    else:
        if lm is None:
            C = 49
        else:
            C = _int("landmarks", lm)
            if C > M:
                raise ValueError(f"landmarks must be <= the number of keys S = {M}, got {C}")
        C = min(C, N, M)
        qbar = _segmean(s * q.astype(np.float64), C)
        kbar = _segmean(s * k.astype(np.float64), C)
    if options["mixed_landmarks"]:
        lg = kbar @ np.swapaxes(kbar, -1, -2)
        p = np.exp(lg - lg.max(-1, keepdims=True))
        kbar = (p / p.sum(-1, keepdims=True)) @ kbar
    mu = qbar + kbar
    Cp = mu.shape[-2]
    if R > 1:
        qbar, mu = np.repeat(qbar, R, -2), np.repeat(mu, R, -2)
    nz = options["noise"]
    if sampling == "mean":
        omega = mu
    else:
        if nz is None:
            nz = lara_noise(np.broadcast_shapes(batch, mu.shape[:-2]), Cp, R, d, anti, seed)
        else:
            nz = _explicit("noise", nz, (Cp * R, d), batch)
        omega = mu + sigma * np.asarray(nz, np.float64)
    o = _core._lara(q.astype(comp, copy=False), k.astype(comp, copy=False),
                    v.astype(comp, copy=False), qbar.astype(comp), mu.astype(comp),
                    omega.astype(comp), float(tau), acoef, np.int64(ALPHAS[alpha]))
    return call.finish(o)


def ra_forward(call: Call, options: dict):
    """la.noncausal(q, k, v, kind="ra", ...): randomized attention, docs/design/lara.md §3
    (quadratic)."""
    q, k, v, dims, comp, tau, seed = _inputs(call)
    d, N, batch = dims.D, dims.T, dims.batch
    S = _int("samples", options["samples"])
    component = val.choice("component", options["component"], tuple(COMPONENTS))
    sampling = val.choice("sampling", options["sampling"], SAMPLINGS)
    sigma = _sigma(options["noise_std"], d)
    u, z = options["uniforms"], options["noise"]
    if u is not None:
        u = _explicit("uniforms", u, (N, S), batch, dtype=np.float64)
        if not np.all((u > 0) & (u < 1)):
            raise ValueError("uniforms must lie in the open interval (0, 1)")
    if z is not None:
        z = _explicit("noise", z, (N, S, d), batch)
    du, dz = ra_draws(batch, N, S, d, component == "sample" and u is None,
                      sampling == "sample" and z is None, seed)
    u = du if u is None else u
    z = dz if z is None else z
    if u is None:
        u = np.broadcast_to(np.zeros(1), (N, S))
    if z is None:
        z = np.broadcast_to(np.zeros(1, comp), (N, S, d))
    flags = COMPONENTS[component] | (4 if sampling == "mean" else 0)
    o = _core._ra(q.astype(comp, copy=False), k.astype(comp, copy=False),
                  v.astype(comp, copy=False), np.asarray(z).astype(comp, copy=False),
                  np.asarray(u, np.float64), float(tau), float(sigma), np.int64(flags))
    return call.finish(o)


reg.register(reg.KindSpec(
    name="ra",
    doc="Randomized attention: an unbiased Monte-Carlo estimate of softmax attention "
        "(quadratic; a reference and test oracle).",
    paper="Zheng, Wang, Kong 2022, Linear Complexity Randomized Self-attention Mechanism, "
          "ICML, arXiv:2204.04667",
    fmap_q=None, fmap_k=None, scale=reg.pow_inv_sqrt,
    scale_doc="d**-0.5; sqrt(scale) multiplies q and k", normalize="softmax", eps=0.0,
    causal_modes=(), keywords=("seed",),
    options={"samples": 1, "component": "sample", "sampling": "sample", "noise_std": 1.0,
             "noise": None, "uniforms": None},
    forward=ra_forward, example_kwargs={"seed": 0}, progress=False,
))
reg.register(reg.KindSpec(
    name="lara",
    doc="Linear randomized attention: self-normalised multiple importance sampling with "
        "chunk-pooled Gaussian proposals (non-causal).",
    paper="Zheng, Wang, Kong 2022, Linear Complexity Randomized Self-attention Mechanism, "
          "ICML, arXiv:2204.04667",
    fmap_q=None, fmap_k=None, scale=reg.pow_inv_sqrt,
    scale_doc="d**-0.5; sqrt(scale) multiplies q and k", normalize="softmax", eps=0.0,
    causal_modes=(), keywords=("seed",),
    options={"landmarks": None, "grid": None, "mixed_landmarks": False, "alpha": "opt",
             "alpha_coeff": 1.0, "sampling": "sample", "noise_std": 1.0,
             "samples_per_proposal": 1, "antithetic": False, "noise": None},
    forward=lara_forward, example_kwargs={"seed": 0, "landmarks": 3}, progress=False,
))
