"""A module that fails while it is imported."""

raise RuntimeError("configuration missing:\nset APP_CONFIG")
