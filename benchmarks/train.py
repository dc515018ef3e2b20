"""Train small models with ``linattn.torch`` on two synthetic tasks from the literature.

- **MQAR**, multi-query associative recall (Zoology, Arora et al. 2023): ``n_kv`` key-value
  pairs, then queries of those keys; the target at each query is the key's value.
- **Selective copying** (Mamba, Gu & Dao 2023, section 4.1): ``n_data`` data tokens at
  random positions among noise tokens, then ``n_data`` markers; the target at the markers
  is the data tokens in order.

Every model: token embedding, 2 blocks of (LayerNorm, mixer, residual, LayerNorm, MLP x4,
residual), width 64, 4 heads; the mixer is the kind under test through ``linattn.torch``
(softmax_attention, causal with elu / performer / cosformer / retnet / mamba2, or a
Mamba-1 block around selective_scan).  A kind whose backward this linattn lacks (its
``*_vjp`` raises NotImplementedError or is missing) is skipped, and the table says so.

    python benchmarks/train.py                       # both tasks, every kind (minutes each)
    python benchmarks/train.py --kinds softmax sscan --tasks mqar --steps 300
    python benchmarks/train.py --quick               # seconds: checks the loss falls

Writes the accuracy table (markdown) to stdout and, with ``--out DIR``, ``train.json``,
``train.md`` and ``train_loss.png`` (matplotlib) there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

KINDS = ("softmax", "elu", "performer", "cosformer", "retnet", "mamba2", "sscan")
TASKS = ("mqar", "selcopy")
IGNORE = -100


# ------------------------------------------------------------------------------ tasks

def mqar_batch(rng, batch, n_kv, n_q, vocab):
    """Keys in [0, vocab/2), values in [vocab/2, vocab); sequence ``k1 v1 .. kn vn q1 ..
    qm``; labels: the value of ``qi`` at the position of ``qi``, IGNORE elsewhere."""
    half = vocab // 2
    L = 2 * n_kv + n_q
    x = np.zeros((batch, L), np.int64)
    y = np.full((batch, L), IGNORE, np.int64)
    for b in range(batch):
        keys = rng.choice(half, n_kv, replace=False)
        vals = rng.integers(half, vocab, n_kv)
        x[b, 0:2 * n_kv:2], x[b, 1:2 * n_kv:2] = keys, vals
        pick = rng.integers(0, n_kv, n_q)
        x[b, 2 * n_kv:] = keys[pick]
        y[b, 2 * n_kv:] = vals[pick]
    return x, y


def selcopy_batch(rng, batch, n_data, length, vocab):
    """Tokens: 0 noise, 1 marker, data in [2, vocab); ``length`` tokens with ``n_data``
    data tokens at random positions, then ``n_data`` markers whose labels are the data."""
    x = np.zeros((batch, length + n_data), np.int64)
    y = np.full_like(x, IGNORE)
    for b in range(batch):
        pos = np.sort(rng.choice(length, n_data, replace=False))
        data = rng.integers(2, vocab, n_data)
        x[b, pos] = data
        x[b, length:] = 1
        y[b, length:] = data
    return x, y


def task_batch(task, rng, batch, size):
    if task == "mqar":
        return mqar_batch(rng, batch, size["n_kv"], size["n_q"], size["vocab"])
    return selcopy_batch(rng, batch, size["n_data"], size["length"], size["vocab"])


SIZES = {
    "full": {"mqar": {"n_kv": 8, "n_q": 16, "vocab": 64},
             "selcopy": {"n_data": 8, "length": 48, "vocab": 16}},
    "quick": {"mqar": {"n_kv": 4, "n_q": 8, "vocab": 32},
              "selcopy": {"n_data": 4, "length": 16, "vocab": 12}},
}


# ------------------------------------------------------------------------------ models

def build_model(kind, vocab, width=64, heads=4, layers=2, seq_len=64):
    import torch
    import torch.nn as nn

    import linattn.torch as lt

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.out = nn.Linear(width, width, bias=False)
            if kind == "mamba2":
                self.dt = nn.Linear(width, heads)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            if kind == "softmax":
                o = lt.softmax_attention(q, k, v, causal=True)
            elif kind == "performer":
                o = lt.causal(q, k, v, "performer", num_features=32, seed=0)
            elif kind == "cosformer":
                o = lt.causal(q, k, v, "cosformer", horizon=seq_len)
            elif kind == "mamba2":
                g = -nn.functional.softplus(self.dt(x)).transpose(1, 2)  # (B, H, T) log-decay
                o = lt.causal(q, k, v, "mamba2", decay=g)
            else:
                o = lt.causal(q, k, v, kind)
            return self.out(o.transpose(1, 2).reshape(B, T, width))

    class Mamba(nn.Module):
        """A Mamba-1 mixer: in-projection to (x, z), causal depthwise conv, selective
        scan with input-dependent delta, B, C, gated by z."""

        def __init__(self, d_inner=64, n_state=8, dt_rank=8):
            super().__init__()
            self.inp = nn.Linear(width, 2 * d_inner, bias=False)
            self.conv = nn.Conv1d(d_inner, d_inner, 4, groups=d_inner, padding=3)
            self.xp = nn.Linear(d_inner, dt_rank + 2 * n_state, bias=False)
            self.dtp = nn.Linear(dt_rank, d_inner, bias=False)
            self.dt_bias = nn.Parameter(torch.log(torch.expm1(
                torch.exp(torch.empty(d_inner).uniform_(math.log(1e-3), math.log(1e-1))))))
            self.A_log = nn.Parameter(torch.log(torch.arange(1, n_state + 1).float())
                                      .repeat(d_inner, 1))
            self.D = nn.Parameter(torch.ones(d_inner))
            self.out = nn.Linear(d_inner, width, bias=False)
            self.n, self.r = n_state, dt_rank

        def forward(self, x):
            T = x.shape[1]
            u, z = self.inp(x).chunk(2, -1)
            u = nn.functional.silu(self.conv(u.transpose(1, 2))[..., :T])  # (B, D, T)
            p = self.xp(u.transpose(1, 2))
            dt, Bm, Cm = p.split([self.r, self.n, self.n], -1)
            delta = self.dtp(dt).transpose(1, 2)
            y = lt.selective_scan(u, delta, -torch.exp(self.A_log), Bm.transpose(1, 2),
                                  Cm.transpose(1, 2), D=self.D, z=z.transpose(1, 2),
                                  delta_bias=self.dt_bias, delta_softplus=True)
            return self.out(y.transpose(1, 2))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.mix = Mamba() if kind == "sscan" else Attention()
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                     nn.Linear(4 * width, width))

        def forward(self, x):
            x = x + self.mix(self.n1(x))
            return x + self.mlp(self.n2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(torch.zeros(seq_len, width)) if kind != "sscan" else None
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab)

        def forward(self, x):
            h = self.emb(x)
            if self.pos is not None:
                h = h + self.pos[: x.shape[1]]
            for b in self.blocks:
                h = b(h)
            return self.head(self.norm(h))

    return Model()


# ---------------------------------------------------------------------------- training

def backward_available(kind):
    """None if the kind trains here, else the reason (a missing or NotImplemented vjp)."""
    import torch

    model = build_model(kind, 8, seq_len=8)
    try:
        model(torch.zeros(1, 8, dtype=torch.int64)).sum().backward()
    except NotImplementedError as e:
        return str(e).splitlines()[0]
    return None


def train_one(kind, task, size, steps, batch, lr, seed, log_every, progress=print):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = size["vocab"]
    x0, _ = task_batch(task, rng, 1, size)
    model = build_model(kind, vocab, seq_len=x0.shape[1])
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    losses = []
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        x, y = (torch.from_numpy(a) for a in task_batch(task, rng, batch, size))
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            progress(f"  {task:8s} {kind:10s} step {step + 1:4d}/{steps}  loss "
                     f"{np.mean(losses[-log_every:]):.3f}  {time.perf_counter() - t0:6.1f} s")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    erng = np.random.default_rng(10_000 + seed)
    with torch.no_grad():
        x, y = (torch.from_numpy(a) for a in task_batch(task, erng, 256, size))
        pred = model(x).argmax(-1)
        mask = y != IGNORE
        acc = float((pred[mask] == y[mask]).float().mean())
    return {"kind": kind, "task": task, "params": nparams, "steps": steps, "batch": batch,
            "losses": losses, "accuracy": acc, "wall_s": wall, "cpu_s": cpu}


def table(results, skipped, command):
    tasks = sorted({r["task"] for r in results}, key=TASKS.index)
    lines = [f"Accuracy on held-out batches (256 sequences); `{command}`", "",
             "| kind | params | " + " | ".join(f"{t} acc | {t} CPU min" for t in tasks) + " |",
             "|---|---|" + "---|---|" * len(tasks)]
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = {r["task"]: r for r in results if r["kind"] == kind}
        cells = []
        for t in tasks:
            r = rs.get(t)
            cells += [f"{r['accuracy']:.3f}", f"{r['cpu_s'] / 60:.1f}"] if r else ["-", "-"]
        p = next(iter(rs.values()))["params"]
        lines.append(f"| {kind} | {p / 1e3:.0f} k | " + " | ".join(cells) + " |")
    for kind, why in skipped.items():
        lines.append(f"| {kind} | - | " + " | ".join(["skipped", "-"] * len(tasks))
                     + " |")
    if skipped:
        lines += [""] + [f"- {k} skipped: {why}" for k, why in skipped.items()]
    return "\n".join(lines)


def plot(results, path):
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    tasks = sorted({r["task"] for r in results}, key=TASKS.index)
    fig = Figure(figsize=(6 * len(tasks), 4))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for r in (r for r in results if r["task"] == t):
            w = max(1, len(r["losses"]) // 50)
            sm = np.convolve(r["losses"], np.ones(w) / w, mode="valid")
            ax.plot(sm, label=f"{r['kind']} ({r['accuracy']:.2f})")
        ax.set(title=t, xlabel="step", ylabel="cross-entropy", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run(kinds=KINDS, tasks=TASKS, quick=False, steps=None, batch=None, lr=3e-3, seed=0,
        threads=1, log_every=None, out=None, progress=print):
    """Train every kind on every task; returns ``(results, skipped, table_markdown)``."""
    import torch

    import linattn as la

    if threads:
        torch.set_num_threads(threads)
        la.set_num_threads(threads)
    size = SIZES["quick" if quick else "full"]
    steps = steps or (80 if quick else 1500)
    batch = batch or (16 if quick else 32)
    log_every = log_every if log_every is not None else (10 if quick else 250)
    results, skipped = [], {}
    for kind in kinds:
        why = backward_available(kind)
        if why:
            skipped[kind] = why
            progress(f"skip {kind}: {why}")
            continue
        for task in tasks:
            results.append(train_one(kind, task, size[task], steps, batch, lr, seed,
                                     log_every, progress))
            r = results[-1]
            progress(f"{task} {kind}: accuracy {r['accuracy']:.3f}, "
                     f"{r['cpu_s'] / 60:.2f} CPU min, {r['wall_s']:.0f} s wall")
    argv = " ".join(sys.argv[1:]) if __name__ == "__main__" else ""
    md = table(results, skipped, f"python benchmarks/train.py {argv}".strip())
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "train.json"), "w") as f:
            json.dump({"results": results, "skipped": skipped}, f)
        with open(os.path.join(out, "train.md"), "w") as f:
            f.write(md + "\n")
        if results:
            try:
                plot(results, os.path.join(out, "train_loss.png"))
            except ImportError:
                progress("matplotlib missing: no loss plot")
    return results, skipped, md


def loss_fell(r) -> bool:
    """The mean loss of the last 10 steps is 3 % or more below that of the first 10."""
    return bool(np.mean(r["losses"][-10:]) < 0.97 * np.mean(r["losses"][:10]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--quick", action="store_true",
                    help="tiny tasks, 80 steps; exits 1 unless the loss falls")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and linattn threads (default 1: CPU minutes = wall minutes)")
    ap.add_argument("--out", help="directory for train.json, train.md, train_loss.png")
    a = ap.parse_args(argv)
    results, skipped, md = run(a.kinds, a.tasks, a.quick, a.steps, a.batch, a.lr, a.seed,
                               a.threads, out=a.out,
                               progress=lambda s: print(s, flush=True))
    print()
    print(md)
    if a.quick:
        bad = [f"{r['task']}/{r['kind']}" for r in results if not loss_fell(r)]
        if bad:
            print(f"loss did not fall for {bad}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
