"""`python -m hybrid_assistant.server` = the hybrid-assistant CLI."""

from hybrid_assistant.server.cli import app

# The guard matters: vLLM starts its engine processes with 'spawn', which re-imports this module.
if __name__ == "__main__":
    app()
