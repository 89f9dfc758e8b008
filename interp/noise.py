"""Third-party chatter kept off stderr: library warnings and log lines that are not about the user's run.

bitsandbytes logs that an optional CPU kernel is missing, transformers warns about its own deprecated
aliases that peft calls, and so on, on successful runs too; a researcher reading stderr should see our
progress and our one-sentence errors. ``interp --verbose`` shows everything again.
"""

from __future__ import annotations

import logging
import warnings

LIBRARIES = ("transformers", "peft", "torch", "bitsandbytes", "accelerate", "nnsight", "transformer_lens", "sklearn")


def quiet_third_party() -> None:
    """Silence warnings raised inside ``LIBRARIES`` and their log records below ERROR (process-wide)."""
    pattern = "|".join(LIBRARIES)
    warnings.filterwarnings("ignore", module=rf"({pattern})(\..*)?$")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.set_verbosity_error()
