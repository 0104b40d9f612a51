"""Samplers (kind ``samplers``): batches of indices, seeded per epoch, split across ranks."""
