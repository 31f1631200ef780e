"""`python -m server` = the hybrid-assistant CLI."""

from server.cli import app

# The guard matters: vLLM starts its engine processes with 'spawn', which re-imports this module.
if __name__ == "__main__":
    app()
