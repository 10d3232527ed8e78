"""A plugin whose import fails, as when it needs a package that is not installed."""

raise ImportError("No module named 'sb_missing_dependency'")
