"""The short soak: benchmarks/soak.py for 8 s at 200 req/s with 3 hot swaps (the full one runs 60 s).

Errors, swaps and memory are held to the full soak's bar; the rate to 75% of the target,
because on a shared 2-core CI machine the client threads themselves can be starved of CPU.
"""
import pytest

from scarfx.benchmarks.soak import soak, verdict

# alone: its 3 hot swaps (model loads) must finish within the 8 s, which a pipeline run on
# the other xdist worker can prevent on 2 cores (tests/conftest.py).
pytestmark = [pytest.mark.timeout(180), pytest.mark.alone]


def test_short_soak_holds_rate_through_three_swaps_without_errors_or_leak(tmp_path):
    result = soak(rate=200, seconds=8, swaps=3, threads=4, hidden=(64,), work=str(tmp_path), log=lambda _: None)
    assert verdict(result, max_rss_growth_mb=64, min_rate_share=0.75) == [], result
    assert result["requests"] == 200 * 8 and result["swaps_done"] == 3 and result["errors"] == 0
