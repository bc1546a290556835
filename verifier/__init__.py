"""Validate and score submitted reconstructions against a release's ground truth."""
