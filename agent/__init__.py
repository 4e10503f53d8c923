"""steer.agent."""
