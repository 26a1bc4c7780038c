"""Where results go: each sink is fed the same typed results and owns its failures."""
