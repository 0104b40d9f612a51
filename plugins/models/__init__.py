"""Models (kind ``models``): features ``(B, in_dim, frames)`` to embeddings ``(B, embed_dim)``."""
