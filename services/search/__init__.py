"""thinkmesh search."""
