"""scarfx: benchmarks."""
