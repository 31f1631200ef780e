"""Test fixtures for hybrid-assistant deployments, shared by the project's tests and benches.

Like ``transformers.testing_utils``: what the test suite and ``bench/`` build and drive, shipped
so that users can run the same checks against their own deployment.

- :mod:`~hybrid_assistant.testing.models`: a tiny random Llama with a real BPE tokenizer, and
  PEFT LoRA adapters for any model (``build_tiny_model``, ``build_adapter``);
- :mod:`~hybrid_assistant.testing.live`: a server in a child process that can be restarted,
  killed and measured (``Workspace``, ``LiveServer``), and a health-latency probe;
- :mod:`~hybrid_assistant.testing.statuses`: the statuses the contract documents;
- :mod:`~hybrid_assistant.testing.fuzz`: hypothesis strategies for every RPC and a fuzz runner;
- :mod:`~hybrid_assistant.testing.scenarios`: chaos scenarios (health under hostile requests,
  adapter churn, ``kill -9`` while writing or training, a full disk);
- :mod:`~hybrid_assistant.testing.hostile_adapters`: adapter directories with one thing wrong;
- :mod:`~hybrid_assistant.testing.train_worker`: the training process the kill scenario kills.

Importing this package imports none of them. :mod:`~hybrid_assistant.testing.fuzz` needs
``hypothesis``, which the product does not: install the ``testing`` extra
(``pip install "hybrid-assistant[testing]"``), which also brings ``psutil`` (``LiveServer``
reads a server's memory through it, or from ``/proc`` without it). The rest needs only the
product's own dependencies.
"""

# A checkout's root also makes this folder importable as `testing`; under two names every module
# would load twice (two registries, two Prometheus collectors), so only the installed name works.
if __name__ != "hybrid_assistant.testing":
    raise ImportError(f"import hybrid_assistant.testing, not {__name__}")
