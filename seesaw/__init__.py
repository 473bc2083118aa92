"""Seesaw: throughput-oriented offline LLM inference with dynamic re-sharding."""

__version__ = "0.1.0"
