"""``la.softmax_attention_vjp``: exact softmax attention and its backward, in C.

FlashAttention's scheme: the forward keeps the row log-sum-exp ``lse_t`` (float64, T per
slice); the backward recomputes the scores one tile of 64 queries x 256 keys at a time
(never the T x S matrix; causal tiles above the diagonal are skipped), so its memory is
O(T (D + E)) per slice (docs/design/grad.md §3 "Exact softmax").
"""

from __future__ import annotations

import numpy as np

from .. import _api, _core
from .. import _validate as val
from ._cotangent import as_dtype_of, cotangent, sum_to


def _td(x: np.ndarray, layout: str) -> np.ndarray:
    """The ``(..., T, D)`` view of a ``bthd`` array (no copy)."""
    return np.swapaxes(x, -3, -2) if layout == "bthd" else x


def _prepare(q, k, v, causal, scale, layout):
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, layout, causal=bool(causal))
    scale = (1.0 / np.sqrt(dims.D) if dims.D else 1.0) if scale is None else \
        val.positive_number("scale", scale)
    return q, k, v, dims, res, comp, float(scale)


def forward(q, k, v, causal: bool = True, scale: float | None = None,
            layout: str = "...td"):
    """``(o, o_comp, lse)``: ``o`` as ``la.softmax_attention`` returns it (bit-identical),
    ``o_comp`` the same values in the compute dtype (``o`` itself unless float16), ``lse``
    the float64 row log-sum-exp ``(*batch, T)``."""
    q, k, v, dims, res, comp, scale = _prepare(q, k, v, causal, scale, layout)
    qc, kc, vc = (_td(x.astype(comp, copy=False), dims.layout) for x in (q, k, v))
    o = np.empty(dims.out_shape(dims.E), comp)
    _, lse = _core._softmax_lse(qc, kc, vc, scale, np.int64(bool(causal)),
                                out=(_td(o, dims.layout), None))
    return (o if res == comp else o.astype(res)), o, lse


def backward(q, k, v, o, lse, do, causal: bool = True, scale: float | None = None,
             layout: str = "...td"):
    """``(dq, dk, dv)`` from the forward's ``o`` (compute dtype) and ``lse``; each
    gradient has its input's shape (broadcast axes summed) and dtype."""
    qa, ka, va, dims, res, comp, scale = _prepare(q, k, v, causal, scale, layout)
    do = cotangent("do", do, dims.out_shape(dims.E), "the output o", comp)
    lay = dims.layout
    qc, kc, vc = (_td(x.astype(comp, copy=False), lay) for x in (qa, ka, va))
    o = np.asarray(o).astype(comp, copy=False)
    dq, dk, dv = _core._softmax_bwd(qc, kc, vc, _td(o, lay), _td(do, lay), lse, scale,
                                    np.int64(bool(causal)))
    return tuple(as_dtype_of(sum_to(_td(g, lay), x.shape), x)
                 for g, x in ((dq, qa), (dk, ka), (dv, va)))


def softmax_attention_vjp(q, k, v, causal: bool = True, scale: float | None = None, *,
                          layout: str = "...td"):
    """Exact softmax attention and its vector-Jacobian product (JAX's ``jax.vjp``).

    ::

        o, vjp = la.softmax_attention_vjp(q, k, v, causal=True)
        g = vjp(do)        # {"q": dq, "k": dk, "v": dv}

    ``o`` is what ``la.softmax_attention`` returns (bit-identical).  ``vjp(do,
    dstate=None)`` takes ``do`` of ``o``'s shape exactly (any real dtype and strides; a
    ValueError names ``do`` otherwise) and returns the gradients with each input's shape
    and dtype: inputs broadcast against each other (``k``, ``v`` shared by heads) get
    their gradients summed over the broadcast axes.  ``vjp`` is pure: call it again,
    from any thread.

    Saved between the calls: references to ``q``, ``k``, ``v`` (the converted arrays,
    which alias the caller's when no conversion was needed: editing them in place before
    ``vjp`` gives wrong gradients), ``o`` and the float64 row log-sum-exp (T per slice).
    The backward recomputes the scores per tile of 64 queries x 256 keys: O(T) memory,
    never T x S.  ``scale`` gets no gradient (pre-scale ``q`` to learn a temperature).
    """
    qa, ka, va, dims, res, comp, scale_f = _prepare(q, k, v, causal, scale, layout)
    o, o_comp, lse = forward(qa, ka, va, causal, scale_f, dims.layout)
    lay = dims.layout

    def vjp(do, dstate=None):
        if dstate is not None:
            raise TypeError("softmax_attention has no state: dstate must be None, got "
                            f"{type(dstate).__name__}")
        dq, dk, dv = backward(qa, ka, va, o_comp, lse, do, causal, scale_f, lay)
        return {"q": dq, "k": dk, "v": dv}

    vjp.nondiff = ()
    return o, vjp
