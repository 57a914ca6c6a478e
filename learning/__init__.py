"""Real PyTorch learning: proxy models, data, pruning, LoRA, aggregation, training.

Offline by construction: importing this package sets ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and
``HF_DATASETS_OFFLINE`` to 1 before any Hugging Face library is imported (``huggingface_hub`` reads them
once, at its own import), and every ``from_pretrained`` passes ``local_files_only``. Only a scenario
with ``learning.allow_download: true`` lets :func:`learning.models.load_proxy` reach the Hub.
"""

import os as _os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    _os.environ[_var] = "1"
