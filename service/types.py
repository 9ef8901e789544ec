"""Type aliases shared across the service."""

from typing import TypeAlias

import numpy as np

StreamId: TypeAlias = str  # "1700000000000-0"
Cursor: TypeAlias = tuple[int, int]  # a stream ID parsed (records.parse_id): ordered
Row: TypeAlias = int  # index of a batch row of the stateful LSTM
Rows: TypeAlias = np.ndarray  # (k,) intp
Fields: TypeAlias = dict[str, str]  # a stream entry's fields, decoded
