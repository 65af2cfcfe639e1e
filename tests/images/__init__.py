"""`make test-images`: the built images, started in Docker as the Helm chart runs them (marker `images`)."""
