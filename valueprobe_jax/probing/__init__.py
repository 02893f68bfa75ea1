"""Value probing: prompts, parsing, representations, ratings and the engine facade (layer 4)."""
