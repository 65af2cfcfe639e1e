"""Helpers shared by thinkmesh's tests: server processes, certificates, free ports."""
