"""bootos."""
