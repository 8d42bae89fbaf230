"""What a verify task pays to run a PostgreSQL suite: GX's import, without scipy.stats or altair until an
expectation needs them (``expectations_gx._defer_heavy_imports``)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from polymigrate.expectations_gx import _defer_heavy_imports
_defer_heavy_imports()
import great_expectations
print("loaded before use:", "scipy.stats._stats_py" in sys.modules, "altair.vegalite" in sys.modules)
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
print("entropy:", round(kl.stats.entropy([0.5, 0.5], [0.9, 0.1]), 4))
print("loaded after use:", "scipy.stats._stats_py" in sys.modules)
from scipy.stats import norm
print("norm:", norm.cdf(0))
print("chart:", type(kl.alt.Chart).__name__, "altair.vegalite" in sys.modules)
"""


def test_gx_imports_without_scipy_stats_or_altair_and_an_expectation_that_needs_them_still_has_them():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:5] == ["loaded before use: False False", "entropy: 0.5108", "loaded after use: True",
                                          "norm: 0.5", "chart: type True"], out.stdout
