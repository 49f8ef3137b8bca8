"""scarfx: serving."""
