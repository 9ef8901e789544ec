"""The row-pinned stateful LSTM: build it the Keras way, step it online the fast way.

Keras defines the network and owns the weights: `build_model` is the classic stateful
model whose batch size is the number of tickers. Stepping it through Keras costs ~1 ms
(tf.function) to ~100 ms (`predict`) of fixed overhead per call, so `LSTMStepper` runs the
same equations in numpy from the Keras weights, touching only the rows that got a tick:
an untouched row's h and c are never written, so they stay bit-exactly as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from threadpoolctl import threadpool_limits

from models.rows import grouped, padded

STATE_DTYPE = np.float32

# The step's matmuls are small: one BLAS thread is faster than two fighting the ingest
# thread and the HTTP loop for this machine's 2 cores (see BENCHMARKS.md).
threadpool_limits(limits=1, user_api="blas")


def build_model(batch_size: int, units: Sequence[int], n_features: int,
                mask_value: float | None = None) -> keras.Model:
    """Input (N, None, F) -> LSTM(stateful, return_sequences) x len(units) -> Dense(1).

    `mask_value` adds a Masking layer (training pads short tickers with it); it has no
    weights, so `set_weights` moves weights between the masked and the plain model.
    """
    if batch_size < 1 or not units or min(units) < 1:
        raise ValueError(f"need batch_size >= 1 and positive units, got {batch_size}, {units}")
    inputs = keras.Input(batch_shape=(batch_size, None, n_features), name="ticks")
    x = inputs if mask_value is None else keras.layers.Masking(mask_value)(inputs)
    for i, u in enumerate(units):
        x = keras.layers.LSTM(u, stateful=True, return_sequences=True, name=f"lstm_{i}")(x)
    outputs = keras.layers.Dense(1, name="next_return")(x)
    return keras.Model(inputs, outputs, name="tickstream_lstm")


@dataclass(frozen=True)
class LayerWeights:
    kernel: np.ndarray  # (F_in, 4H), gate order i, f, c, o as in Keras
    recurrent: np.ndarray  # (H, 4H)
    bias: np.ndarray  # (4H,)

    @property
    def units(self) -> int:
        return self.recurrent.shape[0]


def lstm_weights(model: keras.Model) -> tuple[list[LayerWeights], np.ndarray, np.ndarray]:
    """The LSTM layers' and the Dense head's weights, refusing any other architecture."""
    layers: list[LayerWeights] = []
    dense = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.LSTM) and dense is None:
            cfg = layer.get_config()
            expected = {"activation": "tanh", "recurrent_activation": "sigmoid",
                        "use_bias": True, "return_sequences": True, "go_backwards": False}
            wrong = {k: cfg.get(k) for k, v in expected.items() if cfg.get(k) != v}
            if wrong:
                raise ValueError(f"LSTM layer {layer.name} has unsupported settings {wrong}")
            k, r, b = (np.asarray(w, STATE_DTYPE) for w in layer.get_weights())
            layers.append(LayerWeights(k, r, b))
        elif isinstance(layer, keras.layers.Dense) and dense is None and layers:
            if layer.get_config().get("activation") != "linear" or layer.units != 1:
                raise ValueError(f"head {layer.name} must be a linear Dense(1)")
            dense = [np.asarray(w, STATE_DTYPE) for w in layer.get_weights()]
        else:
            raise ValueError(
                f"unexpected layer {layer.name} ({type(layer).__name__}): expected "
                "Input -> LSTM ... -> Dense(1)"
            )
    if dense is None:
        raise ValueError("model has no Dense(1) head after its LSTM layers")
    return layers, dense[0][:, 0], dense[1]


def _fused(lw: LayerWeights) -> np.ndarray:
    """(H + F_in + 1, 4H): [recurrent; kernel; bias] as one matrix, gate columns o, i, f, g.

    One matmul of a [h, x, 1] row gives all four pre-activations. The o, i, f columns are
    halved (exact: a power of two): sigmoid(z) = 0.5 * tanh(z / 2) + 0.5, so one tanh call
    covers all four gates. Gate order puts the three sigmoid gates first and i, f next to
    g, so that with c stored after g, [i, f] * [g, c] is one call (see `_scratch`).
    """
    hu = lw.units
    stacked = np.concatenate([lw.recurrent, lw.kernel, lw.bias[None]])
    i, f, g, o = (stacked[:, j * hu : (j + 1) * hu] for j in range(4))
    return np.concatenate([o * 0.5, i * 0.5, f * 0.5, g], axis=1).astype(STATE_DTYPE)


def _scratch(buf: np.ndarray, k: int, hu: int) -> tuple[np.ndarray, ...]:
    """Views of the scratch rows [o, i, f, g, c] of the first k active rows, and a product
    buffer: z (pre-activations, then gates), the o, i, f block, o, [i, f], [g, c], c,
    [i * g, f * c] and its halves. 1-D when k == 1 (the tail of a busy ticker), whose
    matmul is then an np.dot into a contiguous vector, the cheapest call for one row.
    """
    b = buf[0] if k == 1 else buf[:k]
    prod = np.empty(b[..., : 2 * hu].shape, STATE_DTYPE)
    return (b[..., : 4 * hu], b[..., : 3 * hu], b[..., :hu], b[..., hu : 3 * hu],
            b[..., 3 * hu :], b[..., 4 * hu :], prod, prod[..., :hu], prod[..., hu:])


class LSTMStepper:
    """Stateful LSTM of `n_rows` rows, stepped online. Row i is one ticker for life.

    State is one (h, c) pair of (N, H) float32 arrays per layer. `step_ticks` is the
    primitive: ticks in arrival order, each with its row; a row advances once per tick,
    in order, and rows without a tick are not touched.
    """

    def __init__(self, layers: list[LayerWeights], head_w: np.ndarray, head_b: np.ndarray,
                 n_rows: int) -> None:
        self.set_weights(layers, head_w, head_b)
        self.h = [np.zeros((n_rows, lw.units), STATE_DTYPE) for lw in layers]
        self.c = [np.zeros((n_rows, lw.units), STATE_DTYPE) for lw in layers]

    def set_weights(self, layers: list[LayerWeights], head_w: np.ndarray,
                    head_b: np.ndarray) -> None:
        """New weights (online learning), same shapes; the rows' state stays as it is."""
        self.layers = layers
        self.head_w = head_w  # (H_last,)
        self.head_b = head_b  # (1,)
        # with 0.5 as an array, not a scalar: no conversion per call (see `step_ticks`)
        self._fused = [(_fused(lw), np.full(3 * lw.units, 0.5, STATE_DTYPE)) for lw in layers]

    @classmethod
    def from_keras(cls, model: keras.Model, n_rows: int | None = None) -> LSTMStepper:
        layers, head_w, head_b = lstm_weights(model)
        return cls(layers, head_w, head_b, n_rows or model.inputs[0].shape[0])

    @property
    def n_rows(self) -> int:
        return self.h[0].shape[0]

    @property
    def units(self) -> list[int]:
        return [lw.units for lw in self.layers]

    @property
    def n_features(self) -> int:
        return self.layers[0].kernel.shape[0]

    @property
    def row_state_size(self) -> int:
        """Floats per row: h and c of every layer."""
        return 2 * sum(self.units)

    def step_ticks(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Advance each tick's row by that tick; return the prediction after each tick.

        rows: (M,) int, x: (M, F) float32, in arrival order -> (M,) float32.

        Timestep s (the s-th tick of each row) is a dependent step of every row with more
        than s ticks. With the active rows sorted busiest first, those are always the first
        k_s of them, so every timestep works on a prefix of fixed buffers: no gathers or
        scatters inside the loop, ~8 numpy calls per timestep whatever k_s is (a skewed
        batch is a long chain of one-row timesteps). Ticks are laid out step-major:
        q = (ticks before timestep s) + (position of the row).
        """
        m = len(rows)
        if m == 0:
            return np.zeros(0, STATE_DTYPE)
        rows = np.asarray(rows, np.intp)
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise IndexError(f"row out of range 0..{self.n_rows - 1}")
        counts = np.bincount(rows, minlength=self.n_rows)
        active = np.flatnonzero(counts)
        active = active[np.argsort(-counts[active], kind="stable")]  # busiest first
        n_act, per_row = len(active), counts[active]
        # k_s = rows with more than s ticks; step s's ticks are q in [off[s], off[s + 1])
        ks = n_act - np.cumsum(np.bincount(per_row))[:-1]
        off = np.concatenate(([0], np.cumsum(ks)))
        # rank of each tick within its row = the timestep at which that row consumes it
        by_row = grouped(rows)
        rank = np.empty(m, np.intp)
        rank[by_row] = np.arange(m) - (np.cumsum(counts) - counts)[rows[by_row]]
        pos = np.empty(self.n_rows, np.intp)
        pos[active] = np.arange(n_act)
        q = off[rank] + pos[rows]
        order = np.empty(m, np.intp)
        order[q] = np.arange(m)
        # A holds one [h, x, 1] row per step input: rows 0..n_act-1 the state before the
        # batch, row n_act + q the h after tick q, next to the x of the row's next tick
        blk = np.concatenate(([0], n_act + off[:-1]))  # A row of step s's first input
        in_row = (blk[rank] + pos[rows])[order]
        last = n_act + off[per_row - 1] + np.arange(n_act)  # A row of each row's final h
        blk_l, ks_l = blk.tolist(), ks.tolist()

        seq = np.asarray(x, STATE_DTYPE)[order]  # (M, F_in), step-major
        for li, (w, half) in enumerate(self._fused):
            h_all, c_all = self.h[li], self.c[li]
            hu, f_in = h_all.shape[1], seq.shape[1]
            a_buf = np.empty((n_act + m, hu + f_in + 1), STATE_DTYPE)
            a_buf[:n_act, :hu] = h_all[active]
            a_buf[in_row, hu:-1] = seq
            a_buf[:, -1] = 1.0
            buf = np.empty((n_act, 5 * hu), STATE_DTYPE)
            buf[:, 4 * hu :] = c_all[active]
            k_cur = 0
            # positional out= and no scalars: per-call overhead is most of a one-row step
            for s, k in enumerate(ks_l):
                if k != k_cur:
                    z, sig, o, i_f, g_c, c, prod, ig, fc = _scratch(buf, k, hu)
                    k_cur = k
                a, b = blk_l[s], blk_l[s + 1]
                if k == 1:
                    np.dot(a_buf[a], w, z)
                    h_out = a_buf[b, :hu]
                else:
                    np.matmul(a_buf[a : a + k], w, z)
                    h_out = a_buf[b : b + k, :hu]
                np.tanh(z, z)
                np.multiply(sig, half, sig)
                np.add(sig, half, sig)
                np.multiply(i_f, g_c, prod)
                np.add(fc, ig, c)  # the new c = f * c + i * g
                np.tanh(c, ig)
                np.multiply(o, ig, h_out)  # the new h = o * tanh(c)
            h_all[active] = a_buf[last, :hu]
            c_all[active] = buf[:, 4 * hu :]
            seq = a_buf[n_act:, :hu]
        return (seq @ self.head_w + self.head_b[0])[q]

    def step(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Keras-shaped step: x (N, T, F), mask (N, T) -> (N, T) predictions, NaN where masked.

        Each row advances over its own unmasked timesteps, in order.
        """
        n, t_len = mask.shape
        if n != self.n_rows or x.shape[:2] != (n, t_len):
            raise ValueError(f"expected x (N={self.n_rows}, T, F) and mask (N, T); "
                             f"got {x.shape} and {mask.shape}")
        # timestep-major order keeps each row's ticks in time order
        t_idx, rows = np.nonzero(mask.T)
        preds = np.full((n, t_len), np.nan, STATE_DTYPE)
        preds[rows, t_idx] = self.step_ticks(rows, x[rows, t_idx])
        return preds

    def get_state(self) -> list[np.ndarray]:
        """[h_0, c_0, h_1, c_1, ...], copies, each (N, H_l)."""
        return [a.copy() for pair in zip(self.h, self.c, strict=True) for a in pair]

    def set_state(self, state: Sequence[np.ndarray]) -> None:
        shapes = [a.shape for pair in zip(self.h, self.c, strict=True) for a in pair]
        if [np.shape(a) for a in state] != shapes:
            raise ValueError(f"state shapes {[np.shape(a) for a in state]} != {shapes}")
        self.h = [np.array(a, STATE_DTYPE) for a in state[0::2]]
        self.c = [np.array(a, STATE_DTYPE) for a in state[1::2]]

    def get_rows(self, rows: np.ndarray) -> np.ndarray:
        """(k, row_state_size) float32: h_0, c_0, h_1, c_1, ... of each given row."""
        return np.concatenate(
            [a[rows] for pair in zip(self.h, self.c, strict=True) for a in pair], axis=1
        )

    def set_rows(self, rows: np.ndarray, packed: np.ndarray) -> None:
        packed = np.asarray(packed, STATE_DTYPE)
        if packed.shape != (len(rows), self.row_state_size):
            raise ValueError(f"packed rows {packed.shape} != ({len(rows)}, {self.row_state_size})")
        col = 0
        for h, c in zip(self.h, self.c, strict=True):
            for a in (h, c):
                a[rows] = packed[:, col : col + a.shape[1]]
                col += a.shape[1]

    def reset_rows(self, rows: np.ndarray) -> None:
        """Zero chosen rows; Keras's reset_state() can only zero them all."""
        for a in (*self.h, *self.c):
            a[rows] = 0.0

    def grow(self, n_rows: int) -> None:
        """Add zero-state rows at the end; existing rows keep their state bit-exactly."""
        self.h = [padded(a, n_rows) for a in self.h]
        self.c = [padded(a, n_rows) for a in self.c]
