"""steer.ops."""
