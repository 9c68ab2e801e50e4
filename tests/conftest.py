"""Test configuration shared by every test file.

* Keras 3 (an oracle for some losses) runs on the torch backend; set before anything imports keras.
* losskit's C++ entry points build synchronously (``LOSSKIT_ENTRY=sync``), so the path a test takes is fixed.
* ``tests/`` is importable, so test files can ``from helpers import assert_matches_torch``.
* torch uses one intra-op thread (the tests' tensors are tiny).
* Hypothesis runs reproducibly (derandomized, no example database, no deadline): CI sees the same
  examples on every run. ``HYPOTHESIS_PROFILE=explore`` gives random examples for local bug hunting.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
# losskit's C++ entry points are built at the first call that can use them, in this thread (not in the background
# as for users): every test after it runs the same path. tests/helpers.kernel_spy runs the kernel tests on both.
os.environ.setdefault("LOSSKIT_ENTRY", "sync")

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# The tests run thousands of tiny tensors: one intra-op thread avoids thread start-up and spin-waiting
# (on a 2-core CI box shared with other jobs this makes small ops about 5x faster). Results do not change.
torch.set_num_threads(1)

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
