"""The InstaHide challenge release format: parameters, randomness, pixel domains, key store."""

__version__ = "0.1.0"
