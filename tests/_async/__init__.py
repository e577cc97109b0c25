"""Tests written once, async; tests/_sync/ is generated from here."""
