"""server/engines package."""
