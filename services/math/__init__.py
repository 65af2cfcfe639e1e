"""The math domain: the step format, answer grading, datasets and the synthetic curriculum.

Pure Python on sympy and math-verify: it knows nothing of the services above it (an import contract in
pyproject.toml keeps it so), so every service, the trainer and the tools can share it.
"""
