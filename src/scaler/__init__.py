"""scaler: measure how to scale a NATS consumer."""

__version__ = "0.1.0"
