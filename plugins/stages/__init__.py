"""Stages (kind ``stages``): train, and the back-end stages; each reads the recipe sections it names."""
