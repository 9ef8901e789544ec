"""TensorFlow's native start-up noise, kept off a user's terminal.

On a CPU-only machine TensorFlow's C++ side prints absl lines at import and at the first
device query ("failed call to cuInit: ... CUDA error", oneDNN and CPU-feature notes) that
no setting silences before absl is initialised. `native_noise_filtered` catches what the
process writes to file descriptor 2 meanwhile and passes on every other line.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IW]\d{4} \S+ +\d+ \S+\] "  # absl INFO / WARNING lines
    r"|E\d{4} \S+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    r"|E\d{4} \S+ +\d+ util\.cc:\d+\] oneDNN supports DT_BOOL only"
    r"|To enable the following instructions: )")


@contextmanager
def native_noise_filtered() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if not NOISE.match(line):
                    print(line, file=sys.stderr)
