"""Live scores, test-then-train: each prediction is scored by its ticker's next tick."""

import numpy as np
import pytest

from models.evaluation import Evaluator


def test_each_prediction_is_scored_by_its_rows_next_return() -> None:
    ev = Evaluator(2, halflife=1.0)  # alpha 0.5
    # row 0 predicts 0.1, then sees 0.3 (err 0.04) and predicts -0.2, then sees -0.1
    # (err 0.01); row 1's single tick is never scored
    ev.observe(np.array([0, 1, 0, 0]), np.array([9.0, 9.0, 0.3, -0.1]),
               np.array([0.1, 0.5, -0.2, 0.0]))
    q = ev.row(0)
    assert q.scored == 2
    assert q.mse_model_total == pytest.approx((0.04 + 0.01) / 2)
    assert q.mse_zero_total == pytest.approx((0.09 + 0.01) / 2)
    assert q.mse_model == pytest.approx(0.04 + 0.5 * (0.01 - 0.04))  # first score, then EWMA
    assert q.skill == pytest.approx(1 - q.mse_model / q.mse_zero)
    assert q.sign_hit_rate == 1.0  # +0.1 vs +0.3, -0.2 vs -0.1
    assert ev.row(1).scored == 0 and ev.row(1).skill is None
    overall = ev.overall()
    assert overall.scored == 2 and overall.mse_model == pytest.approx(q.mse_model)
    assert ev.skills() == [pytest.approx(q.skill), None]


def test_scores_do_not_depend_on_batch_cuts_beyond_the_last_bits() -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 7, 2000)
    realised, predicted = rng.normal(0, 1e-3, 2000), rng.normal(0, 1e-3, 2000)
    whole, cut = Evaluator(7, 50.0), Evaluator(7, 50.0)
    whole.observe(rows, realised, predicted)
    for s in range(0, 2000, 33):
        cut.observe(rows[s : s + 33], realised[s : s + 33], predicted[s : s + 33])
    other = cut.export_state(7)
    for name, a in whole.export_state(7).items():  # a closed form per run: the last bits
        np.testing.assert_allclose(a, other[name], rtol=1e-12, err_msg=name)
    assert whole.ints.tobytes() == cut.ints.tobytes()


def test_a_cleared_row_starts_its_scores_over() -> None:
    ev = Evaluator(1, 10.0)
    ev.observe(np.array([0, 0]), np.array([0.0, 0.1]), np.array([0.2, 0.0]))
    assert ev.row(0).scored == 1
    ev.clear_rows(np.array([0]))
    ev.observe(np.array([0]), np.array([0.5]), np.array([0.0]))
    assert ev.row(0).scored == 0  # the new ticker's first tick: nothing to score yet
