"""Samplers as functions over a score function."""
