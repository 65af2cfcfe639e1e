"""thinkmesh ppm."""
