"""The repository's docs stand alone: nothing cites a document outside the repository.

Design citations point at ``docs/design/<file>.md`` and resolve to an existing heading
(``§6.2``) or to a section holding a numbered list (``§4.3 rule 1``, ``§10 test 10``);
nothing cites a bare ``family.md``, ``shared/spec/...``, an issue number or a branch name;
relative links inside ``docs/`` resolve; ``python -m pydoc linattn`` is clean too.
``tools/cite_map.py`` rewrites old-style citations mechanically.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design"
SCANNED = ("python", "src", "tests", "benchmarks", "docs", "notebooks", "tools", "README.md")
TEXT_SUFFIXES = {".py", ".pyi", ".c", ".h", ".md", ".rst", ".txt", ".ipynb", ".toml", ".cfg",
                 ".csv", ".sh", ".cmake", ".in", ""}
# The two files that must spell out the patterns they look for.
SELF = {"tests/test_docs_standalone.py", "tools/cite_map.py"}
DESIGN_NAMES = ("family", "kinds", "api", "lavo", "lara", "peers", "style", "performance",
                "grad", "dask")

OUTSIDE = [
    ("bare design file (write docs/design/<file>.md)",
     re.compile(r"(?<![\w/.-])(?:" + "|".join(DESIGN_NAMES) + r"|lavo-paper)\.md\b")),
    ("spec path", re.compile(r"shared/spec|\.\./shared\b")),
    ("issue number", re.compile(r"\b[Ii]ssues?\s+#?\d+\b")),
    ("branch name", re.compile(r"`[\w./-]+`\s+branch\b|\bbranch\s+`[\w./-]+`")),
]
CITATION = re.compile(r"docs/design/(?P<file>[\w-]+)\.md(?:,?\s+(?:§\s?|sections?\s+)"
                      r"(?P<num>\d+(?:\.\d+)*))?")
HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
MD_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(?:#[^)]*)?\)")


def _tracked() -> list[pathlib.Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=ROOT,
                             capture_output=True, check=True).stdout
        rels = [r for r in out.decode().split("\0") if r]
    except (OSError, subprocess.CalledProcessError):
        rels = []
        for top in SCANNED:
            p = ROOT / top
            rels += [str(f.relative_to(ROOT)) for f in ([p] if p.is_file() else p.rglob("*"))
                     if f.is_file()]
    files = []
    for rel in rels:
        path = ROOT / rel
        if rel in SELF or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        files.append(path)
    return files


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _headings(name: str) -> set[str]:
    path = DESIGN / f"{name}.md"
    return set(HEADING.findall(path.read_text(encoding="utf-8"))) if path.exists() else set()


def _outside_refs(text: str, *, in_design: bool = False) -> list[tuple[int, str, str]]:
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for what, pat in OUTSIDE:
            if in_design and what.startswith("bare design file"):
                continue  # sibling links inside docs/design/ are in-repo references
            if pat.search(line):
                found.append((i, what, line.strip()[:110]))
                break
    return found


def test_design_docs_exist_with_numbered_sections():
    for name in DESIGN_NAMES:
        if name == "api":  # the contract's sections are named (cited as "api.md, Errors")
            text = (DESIGN / "api.md").read_text(encoding="utf-8")
            assert "## Errors" in text and "## State" in text
            continue
        assert _headings(name), f"docs/design/{name}.md is missing or has no numbered section"
    assert (DESIGN / "README.md").exists()


def test_no_citation_of_documents_outside_the_repository():
    offenders = []
    for path in _tracked():
        text = _read(path)
        if text is None:
            continue
        in_design = DESIGN in path.parents
        offenders += [f"{_rel(path)}:{line}: {what}: {excerpt}"
                      for line, what, excerpt in _outside_refs(text, in_design=in_design)]
    assert not offenders, ("citations of documents outside the repository "
                           "(rewrite with tools/cite_map.py):\n" + "\n".join(offenders))


def test_design_citations_resolve_to_a_heading():
    bad = []
    for path in _tracked():
        text = _read(path)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for m in CITATION.finditer(line):
                name, num = m.group("file"), m.group("num")
                if not (DESIGN / f"{name}.md").exists():
                    bad.append(f"{_rel(path)}:{i}: no file docs/design/{name}.md")
                elif num and num not in _headings(name):
                    bad.append(f"{_rel(path)}:{i}: docs/design/{name}.md has no section {num}")
    assert not bad, "unresolved design citations:\n" + "\n".join(bad)


def test_relative_links_in_docs_resolve():
    bad = []
    for path in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in MD_LINK.findall(line):
                if not (path.parent / target).exists():
                    bad.append(f"{_rel(path)}:{i}: broken link {target}")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_each_kind_of_outside_reference():
    # Negative controls: the patterns above must fire on each form they are meant for.
    for line in ("see family.md 6.2", "(kinds.md, performer)", "shared/spec/lara.md",
                 "../shared/spec", "Bad inputs (issue 8)", "see issue #16",
                 "added by the `kind-decay` branch", "lavo-paper.md §2"):
        assert _outside_refs(line), line
    for line in ("docs/design/family.md §6.2", "performer-pytorch#82", "an issue tracker",
                 "LAVO needs at least one branch"):
        assert not _outside_refs(line), line
    assert CITATION.search("docs/design/family.md §4.3 rule 1").group("num") == "4.3"
    assert CITATION.search("docs/design/kinds.md section 7.2").group("num") == "7.2"


def test_pydoc_linattn_has_no_outside_reference():
    pytest.importorskip("linattn")
    env = dict(os.environ, PAGER="cat", COLUMNS="100")
    out = subprocess.run([sys.executable, "-m", "pydoc", "linattn"], capture_output=True,
                         text=True, env=env, cwd=ROOT / "tests", check=True).stdout
    assert "causal" in out  # the package's functions are documented in this output
    offenders = [f"pydoc linattn:{line}: {what}: {excerpt}"
                 for line, what, excerpt in _outside_refs(out)]
    assert not offenders, "\n".join(offenders)


def test_cite_map_rewrites_old_style_citations():
    path = ROOT / "tools" / "cite_map.py"
    if not path.exists():
        pytest.skip("tools/ is not part of this tree")
    spec = importlib.util.spec_from_file_location("cite_map", path)
    cm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cm)
    cases = {
        "(family.md 6.2)": "(docs/design/family.md §6.2)",
        "family.md section 9": "docs/design/family.md §9",
        "family.md 4.3 rule 1": "docs/design/family.md §4.3 rule 1",
        "(family.md 10.10)": "(docs/design/family.md §10 test 10)",
        "kinds.md 7.2": "docs/design/kinds.md §7.2",
        "(shared/spec/lavo.md)": "(docs/design/lavo.md)",
        "Bad inputs (issue 8): x": "Bad inputs: x",
        "(issue 8; family.md sections 8-10)": "(docs/design/family.md §8-10)",
        "(api.md, Errors)": "(docs/design/api.md, Errors)",
        "docs/design/family.md §6.2": "docs/design/family.md §6.2",
    }
    for old, new in cases.items():
        assert cm.rewrite(old) == new, (old, cm.rewrite(old))
        assert not _outside_refs(new), new
    assert cm.rewrite("(kinds.md 5.3)", ascii_only=True) == "(docs/design/kinds.md section 5.3)"


# ----------------------------------------------------------- the README's peer table --
# Each row's linattn call (the first ``la.`` code span of its right-hand cell) is evaluated
# as written and compared with an independent NumPy transcription of what the peer computes
# with its defaults (facts from the peers' code; float64).

def _peer_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How it compares to peers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not line.startswith("|") or set(cells[0]) <= {"-"}:
            continue
        calls = [c for c in re.findall(r"`([^`]+)`", "|".join(cells[1:]))
                 if c.startswith("la.")]
        if calls:
            rows.append((cells[0], calls[0]))
    return rows


def _tril(T):
    return np.tril(np.ones((T, T)))


def _relerr(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _pp_features(x, P, is_query, eps):
    """performer-pytorch's / google's softmax-kernel features on (..., T, d)."""
    d, m = x.shape[-1], P.shape[0]
    dn = d ** -0.25
    dash = (dn * x) @ P.T
    diag = 0.5 * (x * x).sum(-1, keepdims=True) * dn * dn
    mx = dash.max(-1, keepdims=True) if is_query else dash.max(axis=(-1, -2), keepdims=True)
    return m ** -0.5 * (np.exp(dash - diag - mx) + eps)


def _peer_cases(rng):
    """{substring of the peer cell: (namespace for the call, reference output, mask)}"""
    Bn, T, H, K, E = 2, 21, 3, 6, 5
    q, k, v = (rng.standard_normal((Bn, T, H, n)) for n in (K, K, E))
    qh, kh, vh = (np.swapaxes(x, 1, 2) for x in (q, k, v))  # (b, h, n, d)
    s, M, cases = K ** -0.5, _tril(T), {}
    qp, kp = np.abs(q), np.abs(k)
    A = np.einsum("bthk,bshk->bhts", s * qp, kp) * M
    ref = np.einsum("bhts,bshv->bthv", A, v) / (A.sum(-1).transpose(0, 2, 1)[..., None] + 1e-10)
    cases["chunk_linear_attn"] = (dict(q=qp, k=kp, v=v, K=K), ref)
    g = -0.3 * np.abs(rng.standard_normal((Bn, T, H)))
    G = np.cumsum(g, 1).transpose(0, 2, 1)
    W = np.exp(np.minimum(G[..., :, None] - G[..., None, :], 0)) * M
    ref = np.einsum("bhts,bthk,bshk,bshv->bthv", W, s * q, k, v)
    cases["chunk_simple_gla"] = (dict(q=q, k=k, v=v, K=K, g=g), ref)
    lag = np.arange(T)[:, None] - np.arange(T)[None, :]
    gr = np.log(1 - 2.0 ** (-5 - np.arange(H)))
    W = np.exp(gr[:, None, None] * np.maximum(lag, 0)) * M
    cases["chunk_retention"] = (dict(q=q, k=k, v=v),
                                np.einsum("hts,bthk,bshk,bshv->bthv", W, s * q, k, v))
    phi = lambda x: np.where(x > 0, x + 1, np.exp(x))  # noqa: E731
    A = np.einsum("bthk,bshk->bhts", phi(q), phi(k)) * M
    ref = np.einsum("bhts,bshv->bthv", A, v) / (A.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)
    cases["CausalLinearAttention(d)"] = (dict(q=q, k=k, v=v), ref)
    n_dims, temp = 8, 0.3
    omega = rng.standard_normal((K, n_dims // 2))

    def favor(x):
        x = x * np.sqrt(temp)
        u = x @ omega
        off = 0.5 * (x * x).sum(-1, keepdims=True) + 0.5 * np.log(n_dims)
        return np.concatenate([np.exp(u - off), np.exp(-u - off)], -1)

    A = np.einsum("bthk,bshk->bhts", favor(q), favor(k)) * M
    ref = np.einsum("bhts,bshv->bthv", A, v) / (A.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)
    cases["Favor("] = (dict(q=q, k=k, v=v, omega=omega, n_dims=n_dims, softmax_temp=temp), ref)
    m = 10
    P = rng.standard_normal((m, K))
    fq, fk = _pp_features(qh, P, True, 1e-4), _pp_features(kh, P, False, 1e-4)
    A = np.einsum("bhtm,bhsm->bhts", fq, fk)
    ns = dict(q=qh, k=kh, v=vh, m=m, P=P, b=Bn, h=H, E=E)
    cases["nb_features=m)` on"] = (ns, np.einsum("bhts,bhsv->bhtv", A, vh) / A.sum(-1)[..., None])
    den = np.einsum("bhtm,bhtm->bht", fq, np.cumsum(fk, 2) + 1e-6)
    cases["causal=True"] = (ns, np.einsum("bhts,bhsv->bhtv", A * M, vh) / den[..., None])
    P = rng.standard_normal((256, K))  # JAX's default nb_features
    fq, fk = _pp_features(qh, P, True, 1e-6), _pp_features(kh, P, False, 1e-6)
    A = np.einsum("bhtm,bhsm->bhts", fq, fk) * M
    R = A.sum(-1)
    ref = np.swapaxes(np.einsum("bhts,bhsv->bhtv", A, vh) / R[..., None], 1, 2)
    cases["make_fast_softmax_attention"] = (
        dict(q=q, k=k, v=v, P=P), ref,
        np.swapaxes(np.abs(R) > 1e-6, 1, 2))  # JAX's own 2*eps guard acts only below eps
    sl = np.array([0.5, 0.25, 0.125])
    W = np.exp(-sl[:, None, None] * np.maximum(lag, 0)) * M
    cases["lightning_attn_func"] = (dict(q=qh, k=kh, v=vh, s=sl.reshape(H, 1, 1), h=H),
                                    np.einsum("hts,bhtk,bhsk,bhsv->bhtv", W, qh, kh, vh))
    Pd, Nd = 4, 6
    X = rng.standard_normal((Bn, T, H, Pd))
    dt = 0.1 * np.abs(rng.standard_normal((Bn, T, H)))
    A_, Bm, Cm = -np.abs(rng.standard_normal(H)), rng.standard_normal((Bn, T, H, Nd)), \
        rng.standard_normal((Bn, T, H, Nd))
    hs, Y = np.zeros((Bn, H, Pd, Nd)), np.zeros((Bn, T, H, Pd))
    for t in range(T):  # Mamba-2's recurrence, literally
        hs = np.exp(A_ * dt[:, t])[..., None, None] * hs \
            + np.einsum("bhp,bhn->bhpn", X[:, t] * dt[:, t, :, None], Bm[:, t])
        Y[:, t] = np.einsum("bhpn,bhn->bhp", hs, Cm[:, t])
    cases["ssd_minimal_discrete"] = (dict(X=X, dt=dt[..., None], A=A_, B=Bm, C=Cm, block_len=8),
                                     Y)
    return cases


def test_readme_peer_table_calls_equal_the_peers_defaults():
    la = pytest.importorskip("linattn")
    rows = _peer_rows()
    cases = _peer_cases(np.random.default_rng(7))
    checked = set()
    for peer, call in rows:
        key = next((c for c in cases if c in peer), None)
        if key is None:
            continue  # rows without a transcription here (selective_scan, LinearRA)
        ns, ref, *mask = cases[key]
        if key == "ssd_minimal_discrete":  # dt is (b, l, h, 1) so that X*dt broadcasts
            call = call.replace("decay=A*dt", "decay=A*dt[..., 0]")
        out = eval(call, {"la": la, "np": np}, dict(ns))  # noqa: S307 - our own README
        if isinstance(out, tuple):  # return_state=True
            out = out[0]
        if mask:
            out, ref = np.asarray(out)[mask[0]], ref[mask[0]]
        assert _relerr(out, ref) < 1e-12, (peer, call, _relerr(out, ref))
        checked.add(key)
    assert checked == set(cases), f"README rows missing for {set(cases) - checked}"
