"""bootos/agent."""
