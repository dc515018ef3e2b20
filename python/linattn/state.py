"""``la.State``: the carried state of every causal kind."""

from __future__ import annotations

from typing import Any

import numpy as np

_FORMAT = 1


class State:
    """The state a causal call hands to the next one.

    Attributes
    ----------
    S : ndarray or None
        ``(..., F, E)`` key-major state (``sum_s w(T-1, s) phi(k_s) v_s^T`` plus the carried
        term); ``F`` is the feature width of the kind.
    z : ndarray or None
        ``(..., F)`` denominator state (kinds that normalise with ``"div"``), else None.
    t : int
        Absolute position: the number of tokens consumed so far.
    kind : str
        The kind that produced the state; resuming with another kind raises.
    extra : dict[str, ndarray]
        Kind-specific arrays (Performer's running maximum, LAVO's ring, cosFormer's horizon).

    The structure is the same for ``T = 1`` and ``T > 1``.  ``to_dict()`` /
    ``State.from_dict()`` round-trip through plain arrays (``np.savez`` works).
    """

    __slots__ = ("S", "z", "t", "kind", "extra", "__weakref__")

    def __init__(self, S: np.ndarray | None, z: np.ndarray | None, t: int, kind: str,
                 extra: dict[str, Any] | None = None) -> None:
        self.S = S
        self.z = z
        self.t = int(t)
        self.kind = str(kind)
        self.extra = dict(extra) if extra else {}

    @classmethod
    def zeros(cls, kind: str, batch_shape=(), D: int = 1, E: int | None = None,
              dtype=np.float64, **options: Any) -> State:
        """The empty state (``t = 0``) of ``kind`` for inputs with batch dimensions
        ``batch_shape``, ``D`` features and ``E`` value columns (default ``D``).

        It is exactly the state ``la.causal(..., return_state=True)`` returns after zero
        tokens, so ``options`` are that call's (``horizon=`` for cosFormer,
        ``num_features=`` / ``seed=`` for the random-feature kinds, ``window=`` for
        LAVO, ...).  Start a decoding loop from it::

            state = la.State.zeros("elu", (B, H), D, E)
            for t in range(T):
                o_t, state = la.step(q[..., t, :], k[..., t, :], v[..., t, :], state,
                                     inplace=True)

        For ``kind="lavo"``, ``E=None`` makes a keys-equal-values state and an explicit
        ``E`` (which must equal ``D``) one with separate values.
        """
        from . import _api, _validate as val

        if isinstance(batch_shape, (int, np.integer)):
            batch_shape = (batch_shape,)
        batch = tuple(int(b) for b in batch_shape)
        D = val.positive_int("D", D)
        k = np.zeros(batch + (0, D), dtype)
        v = k if E is None else np.zeros(batch + (0, val.positive_int("E", E)), dtype)
        return _api.causal(k, k, v, kind, return_state=True, **options)[1]

    def copy(self) -> State:
        return State(None if self.S is None else self.S.copy(),
                     None if self.z is None else self.z.copy(), self.t, self.kind,
                     {k: np.array(v, copy=True) for k, v in self.extra.items()})

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> State:
        return self.copy()

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, d: dict[str, Any]) -> None:
        s = State.from_dict(d)
        for name in ("S", "z", "t", "kind", "extra"):
            setattr(self, name, getattr(s, name))

    @property
    def dtype(self) -> np.dtype | None:
        return None if self.S is None else self.S.dtype

    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays only, so ``np.savez(path, **state.to_dict())`` works."""
        d: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "kind": np.array(self.kind),
            "t": np.array(self.t, dtype=np.int64),
        }
        if self.S is not None:
            d["S"] = self.S
        if self.z is not None:
            d["z"] = self.z
        for k, v in self.extra.items():
            d["extra." + k] = np.asarray(v)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> State:
        """Inverse of :meth:`to_dict`; accepts an ``np.load`` result too."""
        try:
            keys = list(d.keys())
            kind = str(np.asarray(d["kind"])[()])
            t = int(np.asarray(d["t"])[()])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"state dict must hold 'kind' and 't' entries ({exc})") from None
        if t < 0:
            raise ValueError(f"state dict 't' must be >= 0, got {t}")
        S = np.asarray(d["S"]) if "S" in keys else None
        z = np.asarray(d["z"]) if "z" in keys else None
        for name, arr in (("S", S), ("z", z)):
            if arr is not None and arr.dtype not in (np.float32, np.float64):
                raise ValueError(f"state dict '{name}' must be float32 or float64, "
                                 f"got {arr.dtype}")
        if S is not None and S.ndim < 2:
            raise ValueError(f"state dict 'S' must have at least 2 dimensions (..., F, E), "
                             f"got shape {S.shape}")
        if z is not None and S is not None and z.shape != S.shape[:-1]:
            raise ValueError(f"state dict 'z' has shape {z.shape} but 'S' has shape {S.shape}; "
                             f"expected z.shape == S.shape[:-1]")
        extra = {k[6:]: np.asarray(d[k]) for k in keys if k.startswith("extra.")}
        return cls(S, z, t, kind, extra)

    def __repr__(self) -> str:
        s = "None" if self.S is None else f"{self.S.dtype}{list(self.S.shape)}"
        z = "None" if self.z is None else f"{list(self.z.shape)}"
        ex = f", extra={sorted(self.extra)}" if self.extra else ""
        return f"State(kind={self.kind!r}, t={self.t}, S={s}, z={z}{ex})"
