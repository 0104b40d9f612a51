"""vvframe's first-party components, installed as ``vvframe_plugins``.

Each is declared in setup.cfg under ``[options.entry_points]`` exactly as a third-party package would
declare its own; the kernel (``vvframe``) never imports this package.
"""
