"""qnet: QuartzNet speech recognition recipes on torch, k2 and lhotse."""

__version__ = "0.1.0"
