"""An example third-party vvframe plugin package."""
