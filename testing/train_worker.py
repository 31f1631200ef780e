"""Trains LoRA adapters on the tiny model into one output directory until killed (run by
:func:`hybrid_assistant.testing.scenarios.training_kill_round`).

``loop``: retrain ``<root>/<name>`` with overwrite=True over and over, printing ``published <n>``
after each train_adapter call returns, so the parent knows an adapter was acknowledged.
``die-mid-publish``: publish once, then retrain and SIGKILL itself in the middle of publishing:
right after the atomic exchange (before the old adapter is deleted) or, where the exchange is not
supported, after the old adapter was moved aside and before the new one is renamed into place.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from hybrid_assistant.adapters import training
from hybrid_assistant.adapters.data import chat
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig

CONFIG = TrainConfig(rank=4, alpha=16, epochs=1, learning_rate=1e-2, batch_size=4, max_length=64)


def main() -> None:
    model_dir, root, name, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    base = BaseModel(model_dir, model_dir.name)
    examples = [
        chat(("user", f"Tell me a story number {i}."), ("assistant", "The quick brown fox."))
        for i in range(8)
    ]
    out = root / name
    if mode == "die-mid-publish":
        training.train_adapter(examples, base, out, CONFIG, overwrite=True, progress=False)
        print("published 0", flush=True)
        real_rename = os.rename

        def rename(src: Any, dst: Any) -> None:
            real_rename(src, dst)
            if Path(src) == out:  # the old adapter has just been moved to the trash
                os.kill(os.getpid(), signal.SIGKILL)

        real_exchange = training._exchange

        def exchange(a: Path, b: Path) -> bool:
            swapped = real_exchange(a, b)
            if swapped:  # the new adapter took the name; the old one is not yet deleted
                os.kill(os.getpid(), signal.SIGKILL)
            return swapped

        training.os.rename = rename  # type: ignore[assignment]
        training._exchange = exchange
        training.train_adapter(examples, base, out, CONFIG, overwrite=True, progress=False)
        print("published 1", flush=True)
        return
    n = 0
    while True:
        training.train_adapter(examples, base, out, CONFIG, overwrite=True, progress=False)
        print(f"published {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
