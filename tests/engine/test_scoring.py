"""The evaluator's core sums chunk counts as they come (issue 12): same totals, bounded results in memory."""
from __future__ import annotations

import numpy as np
import pytest

from wsss.data.palette import write_label_png
from wsss.engine import scoring

N = 5  # classes, background included


def _jobs(tmp_path, count: int, bad: int = 7):
    """``count`` (id, gt PNG, prediction PNG) jobs of random 6x5 maps; job ``bad`` has a 5x5 prediction."""
    rng = np.random.default_rng(0)
    jobs, gts, preds = [], [], []
    for i in range(count):
        gt = rng.integers(0, N, (6, 5)).astype(np.uint8)
        gt[0, 0] = 255
        pred = rng.integers(0, N, (5 if i == bad else 6, 5)).astype(np.uint8)
        write_label_png(tmp_path / f"gt{i}.png", gt)
        write_label_png(tmp_path / f"p{i}.png", pred)
        jobs.append((f"id{i}", tmp_path / f"gt{i}.png", tmp_path / f"p{i}.png"))
        if i != bad:
            gts.append(gt)
            preds.append(pred)
    return jobs, gts, preds


def _plain_counts(gts, preds) -> np.ndarray:
    """(N, N + 1): pixel pairs counted one by one, ignore left out (no prediction here is 255)."""
    matrix = np.zeros((N, N + 1), np.int64)
    for gt, pred in zip(gts, preds):
        for g, p in zip(gt.ravel(), pred.ravel()):
            if g != 255:
                matrix[g, p] += 1
    return matrix


@pytest.mark.parametrize("workers, budget, pool_calls", [(0, None, 0), (2, None, 1), (2, 1, 2)])
def test_streamed_sums_match_a_plain_count(tmp_path, monkeypatch, workers, budget, pool_calls):
    """600 jobs: 10 chunks of 64; on 2 workers a budget of 1 byte makes groups of 8 chunks (two pool calls)."""
    import joblib

    jobs, gts, preds = _jobs(tmp_path, 600)
    if budget is not None:
        monkeypatch.setattr(scoring, "RESULT_BUDGET", budget)
    calls, call = [], joblib.Parallel.__call__
    monkeypatch.setattr(joblib.Parallel, "__call__", lambda self, tasks: calls.append(1) or call(self, tasks))
    total, mismatched = scoring.in_parallel(scoring.label_counts, jobs, workers, n=N)
    np.testing.assert_array_equal(total, _plain_counts(gts, preds))
    assert mismatched == ["id7 (5x5 vs ground truth 6x5)"] and len(calls) == pool_calls


def test_group_size_follows_the_result_budget(monkeypatch):
    monkeypatch.setattr(scoring, "RESULT_BUDGET", 64 * 2 ** 20)
    assert scoring._group_size(2, 81, {}) == 64 * 2 ** 20 // (8 * 81 * 82)  # 1262 label matrices
    assert scoring._group_size(2, 81, {"thresholds": np.zeros(61)}) == 64 * 2 ** 20 // (8 * 81 * 82 * 61)  # 20
    assert scoring._group_size(4, 81, {"thresholds": np.zeros(1000)}) == 16  # never under 4 chunks per worker
