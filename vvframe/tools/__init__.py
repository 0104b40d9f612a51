"""Data preparation: synthetic corpora, audio conversion, VoxCeleb lists."""
