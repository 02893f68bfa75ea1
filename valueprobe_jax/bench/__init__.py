"""Benchmarks: scoring strategies, the HF-PyTorch reference of the paper's procedure (beside engine)."""
