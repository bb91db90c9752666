"""Claims (registered on import; see theory.claims)."""
