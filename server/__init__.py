"""The server: gRPC transport, the answering core, engines, adapters in memory, experiments, the CLI."""

# A checkout's root also makes this folder importable as `server`; under two names every module
# would load twice (two registries, two Prometheus collectors), so only the installed name works.
if __name__ != "hybrid_assistant.server":
    raise ImportError(f"import hybrid_assistant.server, not {__name__}")
