"""scarfx: components."""
