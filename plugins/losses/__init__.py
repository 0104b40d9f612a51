"""Losses (kind ``losses``): embeddings ``(B, P, D)`` and labels ``(B,)`` to ``(loss, accuracy or None)``."""
