"""Helpers the notebook calls: the profile switch, preflight, readiness wait and teardown."""
