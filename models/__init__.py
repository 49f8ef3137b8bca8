"""scarfx: models."""
