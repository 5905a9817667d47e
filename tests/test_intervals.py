"""The 95% intervals of the reproduction's verdicts: Student's t for the seeds there are."""

from __future__ import annotations

import numpy as np
import pytest

from minilora.paper.report import paired_difference, t975, welch_df
from minilora.paper.sizes import past_best


def test_t_quantiles_are_the_tables_and_interpolated_between_listed_df():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(4) == 2.776
    assert t975(11) == pytest.approx(2.201, abs=0.002)  # the table's t(0.975, 11)
    assert t975(25) == pytest.approx(2.060, abs=0.002)  # the table's t(0.975, 25)
    assert 4.303 < t975(1.99) < 4.4  # Welch's df just under 2: close to t(2), not t(1)
    assert t975(1e9) == pytest.approx(1.96, abs=1e-6)
    with pytest.raises(ValueError, match="df=0.5"):
        t975(0.5)


def test_welch_df_of_two_equal_spreads_is_the_pooled_df():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    assert welch_df(a, b) == pytest.approx(4.0)


def test_paired_difference_uses_only_the_seeds_both_have():
    a = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.50}  # seed 3 has no partner: left out
    b = {0: 0.75, 1: 0.76, 2: 0.74}
    diff, half, n = paired_difference(a, b)
    d = np.array([0.05, 0.06, 0.04])
    assert n == 3 and diff == pytest.approx(0.05)
    assert half == pytest.approx(4.303 * d.std(ddof=1) / np.sqrt(3))
    assert paired_difference({0: 1.0}, {0: 0.5, 1: 0.4}) is None


def test_a_curve_falls_only_when_its_matched_seeds_say_so():
    steady_drop = [
        (1, {0: 0.78, 1: 0.81, 2: 0.78, 3: 0.74, 4: 0.69}),
        (2, {0: 0.73, 1: 0.76, 2: 0.73}),
    ]
    assert past_best(steady_drop).startswith("falls past its best (on 3 matched seeds")
    noisy = [(1, {0: 0.80, 1: 0.70}), (2, {0: 0.60, 1: 0.85})]
    assert past_best(noisy).startswith("level past its best")
    assert past_best([(1, {0: 0.5}), (2, {1: 0.4})]).startswith("fewer than 2 matched seeds")
