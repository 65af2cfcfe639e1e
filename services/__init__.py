"""thinkmesh: rStar-Math self-evolved deep thinking as gRPC microservices."""

__version__ = "0.1.0"
