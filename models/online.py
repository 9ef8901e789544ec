"""Online learning: truncated BPTT on the stream, batch = tickers, as stateful Keras trains.

Each tick's input becomes a training example once its row's next tick arrives and brings
the target (that tick's normalised log return). A row's examples form chunks of
`window` ticks; each chunk starts from the state where the row's previous chunk ended *as
the training pass computed it*, the way `fit(shuffle=False)` carries a stateful model's
state from batch to batch. (Not the stepper's row: that one moves in its last bits with
which rows share its matmul, and Adam amplifies such noise into the weights.)

An optimizer step trains up to `batch` chunks of distinct rows at once, padded to a fixed
shape so the tf.function is traced once. Where a step happens (at the tick that completes
the chunk that fills the queue), what it trains on and from which state depend on the
order of ticks alone; with TensorFlow's deterministic ops the weights after stream entry p
are a pure function of the artifact, the settings and the entries up to p.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from models.lstm import STATE_DTYPE, LayerWeights, LSTMStepper, build_model, lstm_weights
from models.rows import grouped, padded

# the queue also trains when it holds this many times `batch` chunks, however few rows
# they cover: a handful of busy tickers must not pile up chunks for ever
QUEUE_CAP_FACTOR = 2


def make_deterministic() -> None:
    """Deterministic TensorFlow ops and fixed thread counts, in every process that learns.

    Thread counts can only be set before TensorFlow's first op; a process that ran one
    keeps its own (and then must have called this earlier, as the CLI does at start).
    """
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def learned_model(base: keras.Model, arrays: dict[str, np.ndarray]) -> keras.Model:
    """A plain model of `base`'s architecture with the weights a learner exported."""
    layers, _, _ = lstm_weights(base)
    model = build_model(1, [lw.units for lw in layers], layers[0].kernel.shape[0])
    for i, v in enumerate(model.trainable_variables):
        v.assign(arrays[f"learn.weight.{i}"])
    return model


@dataclass(frozen=True)
class LearnConfig:
    window: int = 16  # ticks per chunk = truncated-BPTT length
    batch: int = 32  # chunks per optimizer step
    rate: float = 1e-3  # Adam's learning rate
    clipnorm: float = 1.0  # gradients clipped to this global norm
    max_loss_ratio: float = 10.0  # an update whose loss exceeds this x the running loss is skipped
    loss_halflife: float = 100.0  # updates: the running loss's half-life


@dataclass(frozen=True)
class Update:
    """One optimizer step, due once tick `position` (of the run `plan` saw) is stepped."""

    position: int
    rows: np.ndarray  # (B,) int, -1 = padding
    x: np.ndarray  # (B, W, F) float32
    y: np.ndarray  # (B, W) float32


class Chunk(NamedTuple):
    """W finished examples of one row, waiting for an optimizer step."""

    row: int
    x: np.ndarray  # (W, F) float32
    y: np.ndarray  # (W,) float32


@dataclass
class Counts:
    updates: int = 0  # applied
    skipped_nonfinite: int = 0
    skipped_outlier: int = 0
    running_loss: float | None = None  # EWMA of every finite update's loss

    @property
    def skipped(self) -> int:
        return self.skipped_nonfinite + self.skipped_outlier


class OnlineLearner:
    """Collects chunks per row, trains them on the model's own Keras layers, in stream order."""

    def __init__(self, base: keras.Model, config: LearnConfig, n_rows: int) -> None:
        layers, _, _ = lstm_weights(base)  # refuses any other architecture
        # a model of its own: the artifact's stays the base a fresh state starts from
        self.model = build_model(1, [lw.units for lw in layers], layers[0].kernel.shape[0])
        self._base_weights = base.get_weights()
        self.model.set_weights(self._base_weights)
        self.config = config
        model = self.model
        self._lstm = [la for la in model.layers if isinstance(la, keras.layers.LSTM)]
        self._dense = next(la for la in model.layers if isinstance(la, keras.layers.Dense))
        self._vars = list(model.trainable_variables)
        self.optimizer = keras.optimizers.Adam(config.rate, global_clipnorm=config.clipnorm)
        self.optimizer.build(self._vars)
        self._opt_initial = [v.numpy() for v in self.optimizer.variables]
        self.units = [la.units for la in self._lstm]
        self.n_features = int(model.inputs[0].shape[-1])
        self._loss_alpha = 1.0 - 0.5 ** (1.0 / config.loss_halflife)
        # where each layer's weights sit in _vars, in lstm_weights' order (kernel,
        # recurrent, bias; the head's kernel, bias): load_into reads them from there
        at = {id(v): i for i, v in enumerate(self._vars)}
        self._layer_at = [[at[id(v)] for v in la.weights] for la in self._lstm]
        self._head_at = [at[id(v)] for v in self._dense.weights]
        # the whole step (forward, backward, guardrails, Adam) is one graph call: one
        # dispatch and one GIL hand-off per update, gradients never leave the graph; called
        # as the concrete function of its one shape (see _step_fn), traced on first use
        self._step = tf.function(self._train_step)
        self._step_concrete: Callable[..., Any] | None = None
        self._learned: list[np.ndarray] | None = None  # the weights after the last update
        self.reset(n_rows)

    def reset(self, n_rows: int) -> None:
        """Back to the artifact's weights, a new optimizer and no rows' history."""
        self.model.set_weights(self._base_weights)
        for v, initial in zip(self.optimizer.variables, self._opt_initial, strict=True):
            v.assign(initial)
        self._learned = None
        w, f = self.config.window, self.n_features
        self.train_state = [np.zeros((n_rows, u), STATE_DTYPE) for u in self.units for _ in "hc"]
        self.await_x = np.zeros((n_rows, f), STATE_DTYPE)  # each row's last input, no target yet
        self.has_await = np.zeros(n_rows, bool)
        self.pend_x = np.zeros((n_rows, w, f), STATE_DTYPE)  # examples of the unfinished chunk
        self.pend_y = np.zeros((n_rows, w), STATE_DTYPE)
        self.pend_n = np.zeros(n_rows, np.int64)
        self.queue: list[Chunk] = []  # finished chunks waiting for a step, in order
        self.counts = Counts()

    def warm_up(self) -> None:
        """Run the training step once on zeros and put every variable back: else the first
        update of a serving engine stalls its loop for its tracing (~0.5 s)."""
        saved = [v.numpy() for v in (*self._vars, *self.optimizer.variables)]
        b, w, f = self.config.batch, self.config.window, self.n_features
        zeros = [tf.zeros((b, s.shape[1])) for s in self.train_state]
        self._step_fn()(tf.zeros((b, w, f)), tf.zeros((b, w)), tf.zeros((b, w)), zeros,
                        tf.constant(math.inf, tf.float64))  # inf: applied
        for v, value in zip((*self._vars, *self.optimizer.variables), saved, strict=True):
            v.assign(value)
        self._learned = None

    @property
    def n_rows(self) -> int:
        return len(self.has_await)

    @property
    def queue_rows(self) -> list[int]:
        return [c.row for c in self.queue]

    # ---- bookkeeping: which examples, chunks and steps a run of ticks makes

    def plan(self, rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[Update]:
        """Take a run of ticks in stream order; return the steps it triggers, in order.

        rows (M,) int, x (M, F) float32 inputs, y (M,) float32 each tick's normalised log
        return (the target of its row's previous input). The caller steps ticks up to
        each update's position, calls `train`, and goes on.
        """
        m, w = len(rows), self.config.window
        if m == 0:
            return []
        order = grouped(rows)
        r = rows[order]
        first = np.ones(m, bool)
        first[1:] = r[1:] != r[:-1]
        xs = x[order]
        prev_x = np.empty_like(xs)
        prev_x[1:] = xs[:-1]
        prev_x[first] = self.await_x[r[first]]
        is_example = ~first | self.has_await[r]
        ex_r, ex_x, ex_y, ex_tick = r[is_example], prev_x[is_example], y[order][is_example], \
            order[is_example]
        # rows ticking for the first time (since a reset), by position: how many tickers
        # the learner knows at each tick, whatever the batch cuts
        fresh_first = np.sort(order[first & ~self.has_await[r]])
        known_before = int(self.has_await.sum())
        # each row's last input waits for its target
        last = np.append(first[1:], True)
        self.await_x[r[last]] = xs[last]
        self.has_await[r[last]] = True
        if not len(ex_r):
            return []
        # ordinal of each example within its row's examples, counting the unfinished chunk
        ex_first = np.ones(len(ex_r), bool)
        ex_first[1:] = ex_r[1:] != ex_r[:-1]
        starts = np.flatnonzero(ex_first)
        group = np.cumsum(ex_first) - 1
        ordinal = self.pend_n[ex_r] + np.arange(len(ex_r)) - starts[group]
        done = np.flatnonzero(ordinal % w == w - 1)  # examples that finish a chunk
        chunks = self._gather_chunks(ex_r, ex_x, ex_y, ordinal, done)
        # what is left over starts each row's next unfinished chunk
        rows_here = ex_r[starts]
        total = self.pend_n[rows_here] + np.diff(np.append(starts, len(ex_r)))
        left = ordinal >= np.repeat((total // w) * w, np.diff(np.append(starts, len(ex_r))))
        self.pend_x[ex_r[left], ordinal[left] % w] = ex_x[left]
        self.pend_y[ex_r[left], ordinal[left] % w] = ex_y[left]
        self.pend_n[rows_here] = total % w
        known = known_before + np.searchsorted(fresh_first, ex_tick[done], "right")
        return self._queue(ex_r[done], ex_tick[done], known, *chunks)

    def _gather_chunks(self, ex_r: np.ndarray, ex_x: np.ndarray, ex_y: np.ndarray,
                       ordinal: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, W, F) inputs and (C, W) targets of the chunks finished at `done`: the older
        examples of a row's first one may still be in its unfinished-chunk buffer."""
        w = self.config.window
        if not len(done):
            return np.zeros((0, w, self.n_features), STATE_DTYPE), np.zeros((0, w), STATE_DTYPE)
        row = ex_r[done][:, None]
        want = ordinal[done][:, None] - (w - 1) + np.arange(w)  # (C, W) ordinals
        n_before = self.pend_n[ex_r[done]][:, None]
        in_buffer = want < n_before
        index = done[:, None] - (ordinal[done][:, None] - want)  # into the examples
        index = np.where(in_buffer, 0, index)
        slot = np.where(in_buffer, want, 0)
        cx = np.where(in_buffer[..., None], self.pend_x[row, slot], ex_x[index])
        cy = np.where(in_buffer, self.pend_y[row, slot], ex_y[index])
        return cx, cy

    def _queue(self, rows: np.ndarray, ticks: np.ndarray, known: np.ndarray, cx: np.ndarray,
               cy: np.ndarray) -> list[Update]:
        """Queue finished chunks in the order their last tick came; a step is due when the
        queue covers `batch` rows, or every ticker known so far if there are fewer (or
        holds QUEUE_CAP_FACTOR x `batch` chunks)."""
        b = self.config.batch
        updates = []
        for j in np.argsort(ticks, kind="stable").tolist():
            self.queue.append(Chunk(int(rows[j]), cx[j], cy[j]))
            if (len(self.queue) >= QUEUE_CAP_FACTOR * b
                    or len(set(self.queue_rows)) >= min(b, int(known[j]))):
                updates.append(self._take_update(int(ticks[j])))
        return updates

    def _take_update(self, position: int) -> Update:
        """The oldest chunk of each distinct queued row, up to `batch`; the rest stay queued."""
        b, w, f = self.config.batch, self.config.window, self.n_features
        rows = np.full(b, -1, np.int64)
        x = np.zeros((b, w, f), STATE_DTYPE)
        y = np.zeros((b, w), STATE_DTYPE)
        taken: set[int] = set()
        kept = []
        for chunk in self.queue:
            if chunk.row in taken or len(taken) == b:
                kept.append(chunk)
                continue
            k = len(taken)
            taken.add(chunk.row)
            rows[k], x[k], y[k] = chunk
        self.queue = kept
        return Update(position, rows, x, y)

    # ---- training

    def _forward_backward(self, x: tf.Tensor, y: tf.Tensor, weight: tf.Tensor,
                          states: list[tf.Tensor]):
        """Mean squared error over the real chunks, its gradients, and each row's final
        state: the same LSTM cells and Dense head the model predicts with."""
        with tf.GradientTape() as tape:
            seq = [x[:, t] for t in range(self.config.window)]
            finals = []
            for li, layer in enumerate(self._lstm):
                h, c = states[2 * li], states[2 * li + 1]
                out = []
                for x_t in seq:
                    h, (h, c) = layer.cell(x_t, [h, c])
                    out.append(h)
                seq = out
                finals += [h, c]
            pred = self._dense(tf.stack(seq, axis=1))[..., 0]
            loss = tf.reduce_sum(weight * tf.square(pred - y)) / tf.maximum(
                tf.reduce_sum(weight), 1.0)
        grads = tape.gradient(loss, self._vars)
        return loss, tf.linalg.global_norm(grads), grads, finals

    def _step_fn(self) -> Callable[..., Any]:
        """The training step's graph for the one shape it is called with (updates are
        padded to `batch` chunks), traced on first use (~0.5 s): called directly, it skips
        tf.function's per-call signature matching (~0.2 ms of the ~1.5 ms a step takes)."""
        if self._step_concrete is None:
            b, w, f = self.config.batch, self.config.window, self.n_features
            self._step_concrete = self._step.get_concrete_function(
                tf.TensorSpec((b, w, f), tf.float32), tf.TensorSpec((b, w), tf.float32),
                tf.TensorSpec((b, w), tf.float32),
                [tf.TensorSpec((b, u), tf.float32) for u in self.units for _ in "hc"],
                tf.TensorSpec((), tf.float64))
        return self._step_concrete

    def _train_step(self, x: tf.Tensor, y: tf.Tensor, weight: tf.Tensor,
                    states: list[tf.Tensor], threshold: tf.Tensor):
        """`_forward_backward`, then Adam's step if the guardrails of `train` let it: the
        loss and the gradients' norm finite and the loss (as float64) not above
        `threshold`. Returns the loss, the norm, whether it applied, the final states and
        the weights after it."""
        loss, norm, grads, finals = self._forward_backward(x, y, weight, states)
        ok = tf.logical_and(tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm)),
                            tf.logical_not(tf.cast(loss, tf.float64) > threshold))

        def apply() -> tf.Tensor:
            self.optimizer.apply(grads, self._vars)
            return tf.constant(True)

        applied = tf.cond(ok, apply, lambda: tf.constant(False))
        with tf.control_dependencies([applied]):
            weights = [tf.identity(v) for v in self._vars]
        return loss, norm, applied, finals, weights

    def train(self, update: Update) -> bool:
        """One optimizer step, unless a guardrail refuses it; True if the weights changed.

        Either way the rows' training state moves past the chunk (its ticks were seen).
        Guardrails: a loss or gradient norm that is not finite, or (once there is a running
        loss) a loss above `max_loss_ratio` x the running loss, skips the step.
        """
        real = update.rows >= 0
        rows = update.rows[real]
        states = []
        for s in self.train_state:
            padded = np.zeros((len(update.rows), s.shape[1]), STATE_DTYPE)
            padded[real] = s[rows]
            states.append(padded)
        weight = np.repeat(real[:, None], self.config.window, axis=1).astype(STATE_DTYPE)
        c = self.counts
        running = c.running_loss
        threshold = math.inf if running is None else self.config.max_loss_ratio * running
        loss_t, norm_t, applied_t, finals, weights = self._step_fn()(
            tf.constant(update.x), tf.constant(update.y), tf.constant(weight),
            [tf.constant(s) for s in states], tf.constant(threshold, tf.float64))
        loss, applied = float(loss_t), bool(applied_t)
        for s, final in zip(self.train_state, finals, strict=True):
            f = final.numpy()[real]
            s[rows] = np.where(np.isfinite(f), f, 0.0)
        # the graph decided; the counts say why, and every finite loss moves the running one
        finite = math.isfinite(loss) and math.isfinite(float(norm_t))
        if finite:
            c.running_loss = loss if running is None else running + self._loss_alpha * (
                loss - running)
        if applied:
            c.updates += 1
            self._learned = [w.numpy() for w in weights]
        elif finite:
            c.skipped_outlier += 1
        else:
            c.skipped_nonfinite += 1
        return applied

    def load_into(self, stepper: LSTMStepper) -> None:
        """The stepper predicts with the weights just learned."""
        w = self._learned
        if w is None:  # nothing learned since a reset, a warm-up or an import: read them
            w = [np.asarray(v.numpy(), STATE_DTYPE) for v in self._vars]
        layers = [LayerWeights(*(w[i] for i in at)) for at in self._layer_at]
        kernel, bias = (w[i] for i in self._head_at)
        stepper.set_weights(layers, kernel[:, 0], bias)

    # ---- rows

    def grow(self, n_rows: int) -> None:
        if n_rows <= self.n_rows:
            return
        self.train_state = [padded(s, n_rows) for s in self.train_state]
        self.await_x, self.has_await = padded(self.await_x, n_rows), padded(self.has_await, n_rows)
        self.pend_x, self.pend_y = padded(self.pend_x, n_rows), padded(self.pend_y, n_rows)
        self.pend_n = padded(self.pend_n, n_rows)

    def clear_rows(self, rows: np.ndarray) -> None:
        """A reset or recycled row starts over: no training state, no chunk, nothing queued."""
        for s in self.train_state:
            s[rows] = 0.0
        self.has_await[rows] = False
        self.pend_n[rows] = 0
        gone = set(np.asarray(rows).tolist())
        self.queue = [c for c in self.queue if c.row not in gone]

    # ---- snapshot

    def export_state(self, k: int) -> dict[str, np.ndarray]:
        """Everything the learner carries, for the first `k` rows, as named arrays."""
        c, w, f = self.counts, self.config.window, self.n_features
        out = {f"learn.weight.{i}": np.asarray(v.numpy()) for i, v in enumerate(self._vars)}
        out |= {f"learn.opt.{i}": np.asarray(v.numpy())
                for i, v in enumerate(self.optimizer.variables)}
        out |= {f"learn.state.{i}": s[:k].copy() for i, s in enumerate(self.train_state)}
        filled = np.arange(w) < self.pend_n[:k, None]  # slots past pend_n hold leftovers
        out |= {
            "learn.await_x": self.await_x[:k].copy(), "learn.has_await": self.has_await[:k].copy(),
            "learn.pend_x": np.where(filled[..., None], self.pend_x[:k], 0).astype(STATE_DTYPE),
            "learn.pend_y": np.where(filled, self.pend_y[:k], 0).astype(STATE_DTYPE),
            "learn.pend_n": self.pend_n[:k].copy(),
            "learn.queue_rows": np.array(self.queue_rows, np.int64),
            "learn.queue_x": np.array([c.x for c in self.queue], STATE_DTYPE).reshape(-1, w, f),
            "learn.queue_y": np.array([c.y for c in self.queue], STATE_DTYPE).reshape(-1, w),
            "learn.counts": np.array([c.updates, c.skipped_nonfinite, c.skipped_outlier],
                                     np.int64),
            "learn.running_loss": np.array([np.nan if c.running_loss is None
                                            else c.running_loss]),
        }
        return out

    def import_state(self, arrays: dict[str, np.ndarray], k: int) -> None:
        """The inverse of `export_state`; the learner must have >= k rows."""
        for i, v in enumerate(self._vars):
            v.assign(arrays[f"learn.weight.{i}"])
        for i, v in enumerate(self.optimizer.variables):
            v.assign(arrays[f"learn.opt.{i}"])
        self._learned = None
        for i, s in enumerate(self.train_state):
            s[:k] = arrays[f"learn.state.{i}"]
        self.await_x[:k], self.has_await[:k] = arrays["learn.await_x"], arrays["learn.has_await"]
        self.pend_x[:k], self.pend_y[:k] = arrays["learn.pend_x"], arrays["learn.pend_y"]
        self.pend_n[:k] = arrays["learn.pend_n"]
        self.queue = list(map(Chunk, arrays["learn.queue_rows"].tolist(),
                              arrays["learn.queue_x"], arrays["learn.queue_y"]))
        updates, nonfinite, outlier = arrays["learn.counts"].tolist()
        loss = float(arrays["learn.running_loss"][0])
        self.counts = Counts(updates, nonfinite, outlier, None if math.isnan(loss) else loss)
