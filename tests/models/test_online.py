"""The online learner: examples pair each input with its row's NEXT return, chunks start
where the row's previous one ended, steps fall at stream positions whatever the batch
cuts, guardrails refuse what would blow the weights up."""

from pathlib import Path

import keras
import numpy as np
import pytest

from models.artifact import ModelMeta, load_artifact, save_artifact
from models.features import FEATURES, LastTicks, compute_features
from models.lstm import build_model, lstm_weights
from models.online import LearnConfig, OnlineLearner, Update, learned_model
from models.synthetic import SyntheticMarket

F = len(FEATURES)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory):
    keras.utils.set_random_seed(3)
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0, 5.0, 0.5],
                     feature_std=[1e-3, 2.0, 0.5], target_mean=0.0, target_std=1e-3,
                     units=[8], look_back=8)
    directory = tmp_path_factory.mktemp("model")
    save_artifact(directory, build_model(1, [8], F), meta)
    return load_artifact(directory)


def run(artifact, config: LearnConfig, cut: int, n_tickers: int = 12, n: int = 3000,
        warm: bool = False):
    """The learner over a synthetic market fed in runs of `cut` ticks, with a stepper
    taking each update as the engine does (warmed up first, as the engine does, if `warm`);
    returns the learner."""
    ticks = SyntheticMarket(n_tickers, seed=4).ticks(n)
    row_of = {t: i for i, t in enumerate(ticks.tickers())}
    rows = np.array([row_of[t] for t in ticks.ticker])
    learner = OnlineLearner(artifact.model, config, n_tickers)
    if warm:
        learner.warm_up()
    stepper = artifact.stepper(n_tickers)
    last, meta = LastTicks.empty(n_tickers), artifact.meta
    for s in range(0, n, cut):
        r = rows[s : s + cut]
        raw, last = compute_features(r, ticks.price[s : s + cut], ticks.volume[s : s + cut],
                                     ticks.ts_ms[s : s + cut], last)
        x = meta.feature_scaler.transform(raw)
        start = 0
        for u in learner.plan(r, x, meta.target_scaler.transform(raw[:, 0])):
            stepper.step_ticks(r[start : u.position + 1], x[start : u.position + 1])
            if learner.train(u):
                learner.load_into(stepper)
            start = u.position + 1
        stepper.step_ticks(r[start:], x[start:])
    return learner


def test_weights_are_a_function_of_the_stream_not_of_its_batch_cuts(artifact) -> None:
    config = LearnConfig(window=8, batch=4, rate=1e-2)
    whole, cut = run(artifact, config, 1000), run(artifact, config, 37)
    assert whole.counts.updates > 50
    a, b = whole.export_state(12), cut.export_state(12)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert not np.array_equal(a["learn.weight.0"], artifact.model.get_weights()[0])


def test_a_chunk_pairs_each_input_with_the_next_ticks_return(artifact) -> None:
    learner = OnlineLearner(artifact.model, LearnConfig(window=2, batch=1), 2)
    x = np.arange(10 * F, dtype=np.float32).reshape(10, F)
    y = np.arange(10, dtype=np.float32) * 10
    rows = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    updates = learner.plan(rows, x, y)
    # row 0's ticks are 0, 2, 3, 5, 6, 9: examples (x0, y2), (x2, y3) | (x3, y5), (x5, y6)
    # row 1's ticks are 1, 4, 7, 8: examples (x1, y4), (x4, y7) | (x7, y8) waits
    assert [u.position for u in updates] == [3, 6, 7]
    first = updates[0]
    assert first.rows.tolist() == [0]
    np.testing.assert_array_equal(first.x[0], x[[0, 2]])
    np.testing.assert_array_equal(first.y[0], y[[2, 3]])
    np.testing.assert_array_equal(updates[1].x[0], x[[3, 5]])
    np.testing.assert_array_equal(updates[2].y[0], y[[4, 7]])
    # a chunk spanning two runs: the older examples come from the unfinished buffer
    more = learner.plan(np.array([1, 0]), x[:2] + 100, y[:2] + 100)
    assert [u.position for u in more] == [0, 1]
    np.testing.assert_array_equal(more[0].x[0], x[[7, 8]])  # row 1: (x7, y8), (x8, new y0)
    np.testing.assert_array_equal(more[0].y[0], [y[8], y[0] + 100])
    np.testing.assert_array_equal(more[1].x[0], x[[6, 9]])  # row 0: (x6, y9), (x9, new y1)
    np.testing.assert_array_equal(more[1].y[0], [y[9], y[1] + 100])


def test_a_step_takes_distinct_rows_padded_to_one_shape(artifact) -> None:
    learner = OnlineLearner(artifact.model, LearnConfig(window=1, batch=3), 4)
    x = np.ones((8, F), np.float32)
    # window 1: each tick after a row's first finishes a chunk. At tick 5 both tickers
    # known so far (fewer than the batch of 3) have one queued: a step, padded to 3 rows
    updates = learner.plan(np.array([0, 1, 0, 0, 0, 1, 2, 2]), x, np.zeros(8, np.float32))
    assert [u.position for u in updates] == [5]
    u = updates[0]
    assert u.x.shape == (3, 1, F) and u.rows.tolist() == [0, 1, -1]
    assert learner.queue_rows == [0, 0, 2]  # row 0's later chunks wait for the next step
    assert learner.train(u)
    assert learner._take_update(0).rows.tolist() == [0, 2, -1]


def test_the_stepper_predicts_with_the_learned_weights(artifact) -> None:
    learner = run(artifact, LearnConfig(window=8, batch=4, rate=1e-2), 500)
    stepper = artifact.stepper(3)
    learner.load_into(stepper)
    layers, head_w, _ = lstm_weights(learner.model)
    np.testing.assert_array_equal(stepper.layers[0].kernel, layers[0].kernel)
    np.testing.assert_array_equal(stepper.head_w, head_w)
    plain = learned_model(artifact.model, learner.export_state(12))
    for a, b in zip(plain.get_weights(), learner.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _one_update(learner: OnlineLearner, y_value: float) -> Update:
    """Row 0 and a padding row, 4 ticks of the same input, all targets `y_value`."""
    x = np.full((1, 4, F), 0.5, np.float32)
    return Update(0, np.array([0, -1]), np.concatenate([x, np.zeros_like(x)]),
                  np.full((2, 4), y_value, np.float32))


def test_guardrails_skip_non_finite_and_outlier_updates(artifact) -> None:
    learner = OnlineLearner(artifact.model, LearnConfig(window=4, batch=2,
                                                        max_loss_ratio=10.0), 2)
    assert learner.train(_one_update(learner, 1.0))  # predictions ~0: losses ~1
    assert learner.train(_one_update(learner, 1.2))
    before = [w.copy() for w in learner.model.get_weights()]
    assert not learner.train(_one_update(learner, 1e4))  # loss ~1e8 x the running one
    assert not learner.train(_one_update(learner, np.nan))
    for a, b in zip(before, learner.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    c = learner.counts
    assert (c.updates, c.skipped_outlier, c.skipped_nonfinite) == (2, 1, 1)
    assert np.isfinite(learner.train_state[0]).all()


def test_reset_rows_forget_their_chunks_and_state(artifact) -> None:
    learner = OnlineLearner(artifact.model, LearnConfig(window=2, batch=8), 4)
    x = np.ones((8, F), np.float32)
    assert learner.plan(np.array([2, 3, 0, 0, 0, 1, 1, 1]), x, np.ones(8, np.float32)) == []
    assert 0 in learner.queue_rows and 1 in learner.queue_rows
    learner.train_state[0][0] = 1.0
    learner.clear_rows(np.array([0]))
    assert 0 not in learner.queue_rows and 1 in learner.queue_rows
    assert learner.pend_n[0] == 0 and not learner.has_await[0]
    assert (learner.train_state[0][0] == 0).all()


def test_state_round_trips_through_named_arrays(artifact, tmp_path: Path) -> None:
    config = LearnConfig(window=8, batch=4, rate=1e-2)
    a = run(artifact, config, 200)
    arrays = a.export_state(12)
    b = OnlineLearner(artifact.model, config, 12)
    b.import_state(arrays, 12)
    again = b.export_state(12)
    for name in arrays:
        assert arrays[name].tobytes() == again[name].tobytes(), name
    assert b.counts == a.counts
    b.reset(12)  # back to the artifact's weights and a fresh optimizer
    for w, base in zip(b.model.get_weights(), artifact.model.get_weights(), strict=True):
        np.testing.assert_array_equal(w, base)
    assert int(b.optimizer.iterations.numpy()) == 0


def test_warming_up_changes_nothing(artifact) -> None:
    """The engine warms the training step up at start: every variable goes back."""
    config = LearnConfig(window=8, batch=4, rate=1e-2)
    cold, warm = run(artifact, config, 300), run(artifact, config, 300, warm=True)
    for name, value in cold.export_state(12).items():
        assert value.tobytes() == warm.export_state(12)[name].tobytes(), name
