"""Embedding extraction, scoring trial pairs, and the metrics."""
