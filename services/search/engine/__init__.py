"""The MCTS engine: trees, the batching orchestrator, answer rules, and the protocols of what it calls."""
