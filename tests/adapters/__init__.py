"""Tests for adapters/: data, training, registry, demo adapters, CLI."""
