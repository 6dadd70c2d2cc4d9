"""runner/report/stats.py: the descriptive summaries against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np

from compare.report import stats


def test_pareto_front():
    front = stats.pareto_front([1, 2, 3, 4, math.nan, 2], [0.5, 0.7, 0.6, 0.9, 0.99, 0.7])
    assert front.tolist() == [True, True, False, True, False, True]  # equal points are both on the front


def test_confusion_matrix_counts_true_by_predicted():
    got = stats.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(got, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
