"""The eval: datasets, arms, a gRPC runner, knowledge and style metrics, analysis, reports."""

# A checkout's root also makes this folder importable as `eval`; under two names every module
# would load twice (two registries, two Prometheus collectors), so only the installed name works.
if __name__ != "hybrid_assistant.eval":
    raise ImportError(f"import hybrid_assistant.eval, not {__name__}")
