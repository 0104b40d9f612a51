"""A plugin module that fails to import, as a broken third-party package would."""

raise ImportError("No module named 'missing_dependency'")
