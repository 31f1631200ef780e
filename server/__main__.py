"""`python -m server` = the hybrid-assistant CLI."""

from server.cli import app

app()
