"""The kernel: kinds, discovery, schema, recipes and running stages; it imports nothing else of vvframe."""
