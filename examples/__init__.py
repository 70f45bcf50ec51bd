"""Example message handlers for ``scaler run --handler``."""
