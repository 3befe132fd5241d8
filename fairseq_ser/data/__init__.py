"""Manifests, label files, audio reading and corpus preparation."""
