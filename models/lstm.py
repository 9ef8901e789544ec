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

STATE_DTYPE = np.float32
SMALL_STEP = 32  # rows in a timestep below which fewer numpy calls beat reused buffers

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


def _scale(h: int) -> np.ndarray:
    s = np.full(4 * h, 0.5, STATE_DTYPE)
    s[2 * h : 3 * h] = 1.0
    return s


def _cell(lw: LayerWeights, z: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray,
          h: np.ndarray, c: np.ndarray) -> None:
    """One LSTM step of k rows, in place: (k, .) views of buffers the caller reuses.

    In: z = the input part xz, h and c. Out: a = the new c, b = the new h. p is scratch.
    Allocating these (k, 4H) temporaries anew at every timestep costs more than the
    arithmetic (fresh pages fault, on this VM ~2x the step). `lw` has its i, f, o columns
    pre-halved, so tanh(z) gives 2 * sigmoid - 1 for those.
    """
    hu = lw.units
    np.matmul(h, lw.recurrent, out=p)
    z += p  # (k, 4H) pre-activations
    np.tanh(z, out=z)
    for gate in (z[:, : 2 * hu], z[:, 3 * hu :]):  # i, f and o: to sigmoid
        gate *= 0.5
        gate += 0.5
    np.multiply(z[:, hu : 2 * hu], c, out=a)  # f * c
    np.multiply(z[:, :hu], z[:, 2 * hu : 3 * hu], out=b)  # i * g
    a += b  # the new c
    np.tanh(a, out=b)
    b *= z[:, 3 * hu :]  # the new h = o * tanh(c)


def _cell_small(lw: LayerWeights, xz: np.ndarray, h: np.ndarray, c: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """`_cell` for one row ((.,) arrays) or a few: returns the new (h, c).

    The same operations in the same order (so the same bits); small temporaries are
    cheap and fewer calls are not, so this form wins for the long tail of busy tickers.
    """
    hu = lw.units
    t = np.tanh(xz + h @ lw.recurrent)  # (.., 4H)
    s = t * 0.5 + 0.5
    c_new = s[..., hu : 2 * hu] * c + s[..., :hu] * t[..., 2 * hu : 3 * hu]
    return np.tanh(c_new) * s[..., 3 * hu :], c_new


class LSTMStepper:
    """Stateful LSTM of `n_rows` rows, stepped online. Row i is one ticker for life.

    State is one (h, c) pair of (N, H) float32 arrays per layer. `step_ticks` is the
    primitive: ticks in arrival order, each with its row; a row advances once per tick,
    in order, and rows without a tick are not touched.
    """

    def __init__(self, layers: list[LayerWeights], head_w: np.ndarray, head_b: np.ndarray,
                 n_rows: int) -> None:
        self.layers = layers
        self.head_w = head_w  # (H_last,)
        self.head_b = head_b  # (1,)
        # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5: with the i, f, o columns of every weight
        # pre-halved (exact: a power of two), one tanh call covers all four gates
        self._halved = [LayerWeights(lw.kernel * s, lw.recurrent * s, lw.bias * s)
                        for lw, s in ((lw, _scale(lw.units)) for lw in layers)]
        self.h = [np.zeros((n_rows, lw.units), STATE_DTYPE) for lw in layers]
        self.c = [np.zeros((n_rows, lw.units), STATE_DTYPE) for lw in layers]

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
        """
        m = len(rows)
        if m == 0:
            return np.zeros(0, STATE_DTYPE)
        rows = np.asarray(rows, np.intp)
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise IndexError(f"row out of range 0..{self.n_rows - 1}")
        # rank of each tick within its row = the timestep at which that row consumes it
        by_row = np.argsort(rows, kind="stable")
        sorted_rows = rows[by_row]
        starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
        run_len = np.diff(np.append(starts, m))
        rank = np.empty(m, np.intp)
        rank[by_row] = np.arange(m) - np.repeat(starts, run_len)
        by_step = np.argsort(rank, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(rank))))
        step_ticks = [by_step[bounds[t] : bounds[t + 1]] for t in range(len(bounds) - 1)]
        step_rows = [rows[idx] for idx in step_ticks]

        # a timestep with one row (the long tail of a busy ticker) takes the 1-D path:
        # the same arithmetic on views, without the gathers and scatters of the k-row path
        sizes = np.diff(bounds)
        single = (sizes == 1).tolist()
        single_tick = by_step[bounds[:-1]].tolist()
        single_row = rows[by_step[bounds[:-1]]].tolist()

        k_max = int(sizes.max())
        seq = np.asarray(x, STATE_DTYPE)  # (M, F_in) then (M, H) per layer
        for li, lw in enumerate(self._halved):
            hu, h_all, c_all = lw.units, self.h[li], self.c[li]
            xz = seq @ lw.kernel + lw.bias  # (M, 4H): input part for every tick at once
            out = np.empty((m, hu), STATE_DTYPE)
            zb, pb = (np.empty((k_max, 4 * hu), STATE_DTYPE) for _ in range(2))
            hb, cb, ab, bb = (np.empty((k_max, hu), STATE_DTYPE) for _ in range(4))
            for t, idx in enumerate(step_ticks):
                if single[t]:  # one row: basic indexing, views instead of gathers
                    i, r = single_tick[t], single_row[t]
                    h_new, c_all[r] = _cell_small(lw, xz[i], h_all[r], c_all[r])
                    out[i] = h_all[r] = h_new
                elif len(idx) < SMALL_STEP:
                    r = step_rows[t]
                    h_new, c_all[r] = _cell_small(lw, xz[idx], h_all[r], c_all[r])
                    out[idx] = h_all[r] = h_new
                else:
                    r, k = step_rows[t], len(idx)
                    z, h, c, a, b = zb[:k], hb[:k], cb[:k], ab[:k], bb[:k]
                    np.take(xz, idx, axis=0, out=z)
                    np.take(h_all, r, axis=0, out=h)
                    np.take(c_all, r, axis=0, out=c)
                    _cell(lw, z, pb[:k], a, b, h, c)
                    c_all[r] = a
                    h_all[r] = b
                    out[idx] = b
            seq = out
        return seq @ self.head_w + self.head_b[0]

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
        extra = n_rows - self.n_rows
        if extra < 0:
            raise ValueError(f"cannot shrink from {self.n_rows} to {n_rows} rows")
        self.h = [np.concatenate([a, np.zeros((extra, a.shape[1]), STATE_DTYPE)]) for a in self.h]
        self.c = [np.concatenate([a, np.zeros((extra, a.shape[1]), STATE_DTYPE)]) for a in self.c]
