"""thinkmesh's versioned gRPC API (generated stubs live in thinkmesh.v1)."""
