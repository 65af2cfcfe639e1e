"""thinkmesh common."""
