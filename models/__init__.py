"""Everything about the network: features, the row-pinned stateful LSTM, training, artifacts.

Nothing here knows about Redis or HTTP; `service/` builds on top of it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # on JAX, predict() drops RNN state
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner quiet
