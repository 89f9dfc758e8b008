"""persona-interp core: models, neuron capture, streaming statistics, neuron diffing.

Importing this package forbids hub access for the whole process: nothing may reach a
model hub at run time.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
