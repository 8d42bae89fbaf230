"""What a verify task pays to run a PostgreSQL suite: GX's import, without scipy.stats until an
expectation needs it (``expectations_gx._defer_scipy_stats``)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from polymigrate.expectations_gx import _defer_scipy_stats
_defer_scipy_stats()
import great_expectations
print("loaded before use:", "scipy.stats._stats_py" in sys.modules)
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
print("entropy:", round(kl.stats.entropy([0.5, 0.5], [0.9, 0.1]), 4))
print("loaded after use:", "scipy.stats._stats_py" in sys.modules)
from scipy.stats import norm
print("norm:", norm.cdf(0))
"""


def test_gx_imports_without_scipy_stats_and_an_expectation_that_needs_it_still_has_it():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:4] == ["loaded before use: False", "entropy: 0.5108", "loaded after use: True",
                                          "norm: 0.5"], out.stdout
