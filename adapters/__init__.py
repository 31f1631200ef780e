"""LoRA adapters on disk: the PEFT format and its checks, the registry of adapter folders, training."""

# A checkout's root also makes this folder importable as `adapters`; under two names every module
# would load twice (two registries, two Prometheus collectors), so only the installed name works.
if __name__ != "hybrid_assistant.adapters":
    raise ImportError(f"import hybrid_assistant.adapters, not {__name__}")
