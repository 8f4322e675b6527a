"""Selection rules (NumPy only): parity with the published agent's picks, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tspo_edge.selection import METHODS, select_frames

from conftest import GOLDENS

CASES = json.loads((GOLDENS / "index.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"][:-4])
def test_selections_match_published_agent(case):
    d = np.load(GOLDENS / case["file"])
    n = int(d["n_select"])
    for method, key in (("topk", "select_topk"), ("bin-max", "select_bin_max"), ("aks", "select_aks")):
        np.testing.assert_array_equal(select_frames(d["score"], n, method), d[key], err_msg=method)


@pytest.mark.parametrize("method", METHODS)
def test_all_frames_when_n_at_least_T(method):
    s = np.random.default_rng(0).normal(size=7)
    for n in (7, 8, 100):
        np.testing.assert_array_equal(select_frames(s, n, method), np.arange(7))


@pytest.mark.parametrize("method", METHODS)
def test_sorted_distinct_and_n_long(method):
    s = np.random.default_rng(1).normal(size=500)
    idx = select_frames(s, 32, method)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 500
    if method != "aks":  # AKS may return fewer or more than n, as the reference does
        assert len(idx) == 32


def test_topk_and_bin_max_semantics():
    s = np.zeros(20)
    s[[3, 4, 15]] = [5, 4, 3]
    np.testing.assert_array_equal(select_frames(s, 2, "topk"), [3, 4])
    # two bins (anchors 0 and 19): frames 0..9 and 10..19, one arg-max each
    np.testing.assert_array_equal(select_frames(s, 2, "bin-max"), [3, 15])
    np.testing.assert_array_equal(select_frames(s, 4, "uniform"), [2, 7, 12, 17])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["constant", "nan", "inf", "all-nan", "-inf"])
def test_non_finite_and_constant_scores_are_defined(method, kind):
    s = np.random.default_rng(2).normal(size=40)
    if kind == "constant":
        s[:] = 3.0
    elif kind == "nan":
        s[[5, 6]] = np.nan
    elif kind == "inf":
        s[9] = np.inf
    elif kind == "all-nan":
        s[:] = np.nan
    else:
        s[[1, 2]] = -np.inf
    idx = select_frames(s, 8, method)
    assert len(idx) > 0 and np.all(np.diff(idx) > 0) and idx.max() < 40
    if kind in ("constant", "all-nan"):
        np.testing.assert_array_equal(idx, select_frames(s, 8, "uniform"))
    if kind == "inf" and method == "topk":
        assert 9 in idx
    if kind == "nan" and method == "topk":
        assert 5 not in idx and 6 not in idx


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown selection method"):
        select_frames(np.zeros(5), 2, "best")
    with pytest.raises(ValueError, match=">= 1"):
        select_frames(np.zeros(5), 0)
