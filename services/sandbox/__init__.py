"""thinkmesh sandbox."""
