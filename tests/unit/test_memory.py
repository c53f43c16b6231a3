"""workers.memory: glibc malloc tuning and trimming work here (Debian, glibc) and never raise."""

from __future__ import annotations

import numpy as np

from workers import memory


def test_tune_and_trim_on_glibc():
    assert memory.tune() is True
    blocks = [np.ones(3_000_000, np.uint8) for _ in range(20)]  # 60 MB in 3 MB arrays
    del blocks
    assert memory.trim() in (True, False)  # released or nothing to release; never raises
