"""Hostile providers: each tries one escape from the sandbox and must fail."""
