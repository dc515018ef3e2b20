"""NumPy oracles for RA and LARA (docs/design/lara.md §3-4), direct transcriptions of the
definitions in float64 with dense (N x C) and (N x M) matrices."""

from __future__ import annotations

import numpy as np


def _lse(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def segments(L: int, C: int) -> list[tuple[int, int]]:
    """docs/design/lara.md §4.2 1-D segments of a length-L axis into C parts (L >= C)."""
    if C >= L:
        return [(i, i + 1) for i in range(L)]
    g = L // C
    if L % C == 0:
        return [(i * g, (i + 1) * g) for i in range(C)]
    n_short = (g + 1) * C - L
    out, s = [], 0
    for i in range(C):
        n = g if i < n_short else g + 1
        out.append((s, s + n))
        s += n
    return out


def segmean(x: np.ndarray, C: int) -> np.ndarray:
    return np.stack([x[..., a:b, :].mean(-2) for a, b in segments(x.shape[-2], C)], -2)


def lara_core(q, k, v, qbar, mu, omega, alpha="opt", alpha_coeff=1.0):
    """Scaled-space q (N,d), k (M,d), v (M,E), proposals (C,d): docs/design/lara.md §4.4,
    steps 4-6."""
    lk = omega @ k.T - 0.5 * (k * k).sum(-1)             # (C, M)
    Z = _lse(lk, -1)
    f = np.exp(lk - Z[:, None]) @ v                      # (C, E)
    P = omega @ mu.T - 0.5 * (mu * mu).sum(-1)           # (C, C)
    pself = np.diag(P)
    pmix = _lse(P, -1)
    lq = q @ omega.T                                     # (N, C)
    if alpha == "bh":
        logw = lq + Z - pmix
    elif alpha == "const":
        logw = lq + Z - pself
    else:
        bh = np.exp(pself - pmix)
        rl = q @ qbar.T                                  # (N, C): qbar_c . q_n
        r = np.exp(rl - _lse(rl, 0)[None, :])            # normalised over queries n
        al = bh + alpha_coeff * (r - r.mean(-1, keepdims=True))
        logw = np.log(np.maximum(al, 1e-8)) + lq + Z - pself
    w = np.exp(logw - logw.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return w @ f


def ra_core(q, k, v, noise, uniforms, sigma=1.0, component="sample", sampling="sample"):
    """Scaled-space RA (docs/design/lara.md §3.2): noise (N,S,d), uniforms (N,S)."""
    N, S = q.shape[0], (noise.shape[1] if noise is not None else uniforms.shape[1])
    lg = q @ k.T
    pi = np.exp(lg - lg.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    kn = 0.5 * (k * k).sum(-1)
    y = np.zeros((N, v.shape[1]))
    for n in range(N):
        for s in range(S):
            if component == "sample":
                cdf = np.cumsum(pi[n])
                m = min(int(np.searchsorted(cdf, uniforms[n, s], side="left")), k.shape[0] - 1)
                cen = k[m]
            elif component == "mean":
                cen = pi[n] @ k
            else:
                cen = k.mean(0)
            om = q[n] + cen + (sigma * noise[n, s] if sampling == "sample" else 0)
            lf = k @ om - kn
            p = np.exp(lf - lf.max())
            y[n] += (p / p.sum()) @ v / S
    return y


def _batched(fn, arrays, nds, batch):
    outs = None
    for idx in np.ndindex(*batch):
        args = [None if a is None else np.broadcast_to(a, batch + a.shape[a.ndim - nd:])[idx]
                for a, nd in zip(arrays, nds)]
        y = fn(*args)
        if outs is None:
            outs = np.zeros(batch + y.shape)
        outs[idx] = y
    return outs


def lara(q, k, v, *, qbar, mu, omega, scale=None, alpha="opt", alpha_coeff=1.0):
    """LARA from explicit scaled-space proposals ``qbar, mu, omega (..., C, d)``."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = np.sqrt(q.shape[-1] ** -0.5 if scale is None else scale)
    arrays = [s * q, s * k, v, np.asarray(qbar, float), np.asarray(mu, float),
              np.asarray(omega, float)]
    batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays))
    return _batched(lambda *a: lara_core(*a, alpha=alpha, alpha_coeff=alpha_coeff), arrays,
                    [2] * 6, batch)


def ra(q, k, v, *, noise, uniforms, scale=None, sigma=1.0, component="sample",
       sampling="sample"):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = np.sqrt(q.shape[-1] ** -0.5 if scale is None else scale)
    arrays = [s * q, s * k, v, None if noise is None else np.asarray(noise, float),
              None if uniforms is None else np.asarray(uniforms, float)]
    batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays[:3]),
                                *([] if noise is None else [arrays[3].shape[:-3]]),
                                *([] if uniforms is None else [arrays[4].shape[:-2]]))
    return _batched(lambda *a: ra_core(*a, sigma=sigma, component=component,
                                       sampling=sampling), arrays, [2, 2, 2, 3, 2], batch)


def noncausal_lara(q, k, v, *, scale=None, seed=None, landmarks=None, mixed_landmarks=False,
                   alpha="opt", alpha_coeff=1.0, sampling="sample", noise_std=1.0,
                   samples_per_proposal=1, antithetic=False, noise=None, layout="...td",
                   grid=None, **_ignored):
    """Oracle of ``la.noncausal(kind="lara")`` (same options and the same draws)."""
    from .._draws import lara_noise

    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    if layout == "bthd":
        q, k, v = (np.swapaxes(x, -3, -2) for x in (q, k, v))
    d = q.shape[-1]
    tau = d ** -0.5 if scale is None else scale
    s = np.sqrt(tau)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if isinstance(landmarks, tuple):
        qbar = np.asarray(landmarks[0], float)
        kbar = np.asarray(landmarks[1], float)
    else:
        C = 49 if landmarks is None else landmarks
        C = min(C, q.shape[-2], k.shape[-2])
        qbar, kbar = segmean(s * q, C), segmean(s * k, C)
    if mixed_landmarks:
        lg = kbar @ np.swapaxes(kbar, -1, -2)
        p = np.exp(lg - lg.max(-1, keepdims=True))
        kbar = (p / p.sum(-1, keepdims=True)) @ kbar
    mu = qbar + kbar
    R = samples_per_proposal
    qbar, mu = np.repeat(qbar, R, -2), np.repeat(mu, R, -2)
    sigma = d ** -0.25 if noise_std == "code" else float(noise_std)
    if sampling == "mean":
        omega = mu
    else:
        if noise is None:
            nb = np.broadcast_shapes(batch, mu.shape[:-2])
            noise = lara_noise(nb, mu.shape[-2] // R, R, d, antithetic, seed)
        omega = mu + sigma * np.asarray(noise, float)
    o = lara(q, k, v, qbar=qbar, mu=mu, omega=omega, scale=tau, alpha=alpha,
             alpha_coeff=alpha_coeff)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o


def noncausal_ra(q, k, v, *, scale=None, seed=None, samples=1, component="sample",
                 sampling="sample", noise_std=1.0, noise=None, uniforms=None, layout="...td",
                 **_ignored):
    """Oracle of ``la.noncausal(kind="ra")`` (same options and the same draws)."""
    from .._draws import ra_draws

    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    if layout == "bthd":
        q, k, v = (np.swapaxes(x, -3, -2) for x in (q, k, v))
    d, N = q.shape[-1], q.shape[-2]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    u, z = ra_draws(batch, N, samples, d, component == "sample" and uniforms is None,
                    sampling == "sample" and noise is None, seed)
    uniforms = u if uniforms is None else uniforms
    noise = z if noise is None else noise
    if noise is None:
        noise = np.zeros(batch + (N, samples, d))
    if uniforms is None:
        uniforms = np.zeros(batch + (N, samples))
    sigma = d ** -0.25 if noise_std == "code" else float(noise_std)
    o = ra(q, k, v, noise=noise, uniforms=uniforms, scale=scale, sigma=sigma,
           component=component, sampling=sampling)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o
