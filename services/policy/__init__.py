"""thinkmesh policy."""
