"""Experiments (registered on import; see sim.experiments)."""
