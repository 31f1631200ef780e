"""Torch threading for training, set before torch is imported.

Idle OpenMP threads sleep instead of spinning. Training usually shares the machine (with the
server, at least): on 2 busy cores, 2 spinning threads made a training step ~10x slower than 2
passive ones. libgomp reads ``OMP_WAIT_POLICY`` when torch is loaded; an explicit value wins.
This module imports nothing heavy, so an entry point can call it first.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def configure_threads(threads: int | None = None) -> None:
    """Passive OpenMP waiting (when torch is not loaded yet) and, if given, the torch thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        log.debug("torch was imported before OMP_WAIT_POLICY was set; it may not apply")
    if threads:
        import torch

        torch.set_num_threads(threads)
