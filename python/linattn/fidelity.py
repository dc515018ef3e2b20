"""How well random-feature kinds approximate exact softmax attention.

Protocol: docs/design/kinds.md §5.5.
"""

from __future__ import annotations

import numpy as np

from . import _draws
from ._api import causal as _causal, noncausal as _noncausal
from .reference import randomfeatures as _rf

_KINDS = ("performer", "rfa")


def _exact_logits(q, k, kind, scale):
    """The logits whose softmax the kind's features estimate."""
    if kind == "rfa":
        # exp(-scale |q_hat - k_hat|^2 / 2) is proportional to exp(scale q_hat . k_hat)
        q = q / (np.linalg.norm(q, axis=-1, keepdims=True) + 1e-3)
        k = k / (np.linalg.norm(k, axis=-1, keepdims=True) + 1e-3)
    return scale * (q @ np.swapaxes(k, -1, -2))


def approximation_error(q, k, v, kind: str = "performer", num_features=(16, 64, 256, 1024),
                        seeds=(0, 1, 2, 3), causal: bool = False, *, scale=None,
                        **options) -> dict:
    """Error of a random-feature kind against the exact softmax it estimates.

    For every ``m`` in ``num_features`` and every seed, runs ``la.noncausal`` (or
    ``la.causal``) with ``num_features=m, seed=seed`` and compares with exact attention
    computed in float64: Performer estimates ``softmax(scale q k^T)`` (``scale`` default
    ``D**-0.5``); RFA estimates ``softmax(scale q_hat k_hat^T)`` on the normalised
    ``x_hat = x/(|x|+1e-3)`` (``scale`` default 1).

    Returns a dict of arrays: ``num_features (M,)``, ``seeds (S,)``, ``output_error (M, S)``
    (relative RMS error of the output, ``la.testing.relative_rms``), ``attention_error
    (M, S)`` (mean over queries of the L1 error of the implied attention row
    ``phi(q_t).phi(k_s) / sum_s' phi(q_t).phi(k_s')``, at most 2 for non-negative maps),
    and their means over seeds ``mean_output_error``, ``mean_attention_error``.
    ``options`` go to the kind (``features=``, ``eps=``, ...).
    """
    from .testing import relative_rms

    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if "projection" in options:
        raise TypeError("approximation_error draws its projections from num_features= and "
                        "seeds=; projection= is not accepted")
    ms = [int(m) for m in np.atleast_1d(num_features)]
    seeds = [int(s) for s in np.atleast_1d(seeds)]
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    d = q64.shape[-1]
    if scale is None:
        scale = 1.0 if kind == "rfa" else d ** -0.5
    logits = _exact_logits(q64, k64, kind, scale)
    T, S = logits.shape[-2:]
    mask = np.tril(np.ones((T, S), dtype=bool)) if causal else np.ones((T, S), dtype=bool)
    logits = np.where(mask, logits, -np.inf)
    A = np.exp(logits - logits.max(axis=-1, keepdims=True))
    A /= A.sum(axis=-1, keepdims=True)
    exact = A @ v64
    features = options.get("features", "positive")
    out_err = np.zeros((len(ms), len(seeds)))
    att_err = np.zeros((len(ms), len(seeds)))
    run = _causal if causal else _noncausal
    for i, m in enumerate(ms):
        for j, s in enumerate(seeds):
            o = run(q, k, v, kind, num_features=m, seed=s, scale=scale, **options)
            out_err[i, j] = relative_rms(o, exact)
            W, _ = _draws.projection_for(kind, d, m, None, s, features)
            if kind == "rfa":
                fq, fk = _rf.rfa_features(q64, W, scale), _rf.rfa_features(k64, W, scale)
            else:
                fq = _rf.performer_features(q64, W, features, scale)
                fk = _rf.performer_features(k64, W, features, scale)
            Ah = np.where(mask, fq @ np.swapaxes(fk, -1, -2), 0.0)
            Ah = Ah / Ah.sum(axis=-1, keepdims=True)
            att_err[i, j] = float(np.mean(np.abs(Ah - A).sum(axis=-1)))
    return {
        "num_features": np.array(ms),
        "seeds": np.array(seeds),
        "output_error": out_err,
        "attention_error": att_err,
        "mean_output_error": out_err.mean(axis=1),
        "mean_attention_error": att_err.mean(axis=1),
    }


__all__ = ["approximation_error"]
