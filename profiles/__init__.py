"""Hardware and model profiles shipped as package data (YAML)."""
