"""Evaluation and benchmarks: `thinkmesh eval`, `thinkmesh compare`, `thinkmesh bench search`, in-process backends."""
