"""scarfx: pipeline."""
