"""Run-time hub access off, for the programs that start the process (``interp`` and ``python -m ...`` mains).

The library itself leaves the environment alone: a notebook that imports it keeps its own settings. An entry
point calls ``forbid_hub_access()`` first, before anything imports transformers (which reads these once).
"""

from __future__ import annotations

import os

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def forbid_hub_access() -> None:
    """Nothing may reach a model hub from this process (values the user set explicitly are kept)."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
