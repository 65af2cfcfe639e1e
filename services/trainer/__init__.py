"""thinkmesh trainer."""
