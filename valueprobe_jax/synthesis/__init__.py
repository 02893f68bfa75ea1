"""Scenario synthesis and verification for the value-action study (beside experiments)."""
