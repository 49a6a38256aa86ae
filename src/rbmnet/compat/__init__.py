"""Workarounds for environment quirks, each in one small, tested place."""
