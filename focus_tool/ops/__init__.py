"""Stateless helpers: boxes and images."""
