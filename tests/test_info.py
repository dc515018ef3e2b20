"""la.info(), la.kinds(), the thread controls."""

from __future__ import annotations

import os

import linattn as la


def test_info_fields():
    i = la.info()
    for key in ("version", "blas", "blas_corename", "simd", "avx512_kernels", "threads",
                "openmp"):
        assert key in i
    assert i["simd"] in ("avx512", "avx2", "generic")
    assert i["threads"] >= 1
    if i["simd"] == "avx512" and os.environ.get("LINATTN_NO_SIMD") != "1":
        assert i["avx512_kernels"]


def test_kinds_registry_is_true_to_the_code():
    ks = la.kinds()
    for name in ("linear", "elu", "relu"):
        assert name in ks
        d = ks[name]
        assert d["causal"] == ["recurrent", "chunked", "parallel"]
        assert d["noncausal"] is True
        assert d["paper"] and d["doc"]
    assert ks["linear"]["defaults"]["normalize"] == "none"
    assert ks["elu"]["defaults"]["normalize"] == "div"


def test_num_threads_roundtrip():
    la.set_num_threads(1)
    assert la.get_num_threads() == 1
    la.set_num_threads(0)
    assert la.get_num_threads() >= 1
