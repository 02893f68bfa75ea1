"""Experiments: config schema and loading, work items, the resumable store, runner, merge (layer 5)."""
