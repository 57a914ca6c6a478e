"""Where the real learner computes (``learning.device``) and in which precision (``learning.autocast``).

``device``: ``cpu``; ``cuda`` (the first GPU torch sees; an error naming the key when there is none);
``auto`` = ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``. Results are deterministic per
device kind: on CPU the same scenario, seed and ``torch_threads`` give identical files; a GPU run
computes with other kernels, so its numbers differ from a CPU run's within fp32 rounding (more under
autocast), and ``auto`` therefore gives CPU-identical files only on a machine without a GPU. The
default is ``cpu``.

``autocast`` (GPU only): ``none`` keeps fp32; ``bf16`` / ``fp16`` run the forward (and so the
backward) under ``torch.autocast``: matrix products in 16 bits, reductions such as softmax, layer
norm and the cross-entropy in fp32 (torch's autocast op lists). The trained parameters (LoRA
factors, head) and AdamW's state stay fp32. ``fp16`` has 5 exponent bits, so small activation
gradients underflow; its loss is multiplied by a dynamic scale before the backward and the gradients
divided by it afterwards (:class:`LossScaler`, the scheme of Micikevicius et al. 2018, "Mixed
precision training", ICLR: the scale halves after a step whose gradients overflowed, and that step
is skipped; it doubles after 2000 clean steps). ``bf16`` has fp32's exponent range and needs no scale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

DEVICES = ("cpu", "cuda", "auto")
AUTOCAST = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The torch device of ``learning.device`` (module docstring)."""
    if name not in DEVICES:
        raise ValueError(f"learning.device: {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("learning.device: cuda, but torch sees no GPU (allowed here: cpu, auto)")
    return torch.device(name)


def autocast_dtype(kind: str, device: torch.device) -> torch.dtype | None:
    """The 16-bit type of ``learning.autocast`` on ``device``, or None for fp32 (``none``, or any CPU run)."""
    if kind not in AUTOCAST:
        raise ValueError(f"learning.autocast: {kind!r} is not one of {', '.join(AUTOCAST)}")
    if kind == "none" or device.type != "cuda":
        return None
    return _DTYPES[kind]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class LossScaler:
    """Dynamic loss scaling for fp16 (module docstring): ``scale(loss)`` before the backward,
    ``unscale(params)`` after it (True when every gradient is finite), ``update(finite)`` once per step."""

    def __init__(self, init: float = 2.0 ** 16, growth_every: int = 2000):
        self.value = init
        self.growth_every = growth_every
        self.clean = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.value

    def unscale(self, params: Iterable[torch.nn.Parameter]) -> bool:
        """Divide every gradient by the scale; True when all are finite afterwards."""
        finite = True
        inv = 1.0 / self.value
        for p in params:
            if p.grad is not None:
                p.grad.mul_(inv)
                finite = finite and bool(torch.isfinite(p.grad).all())
        return finite

    def update(self, finite: bool) -> None:
        """Halve the scale after an overflow; double it after ``growth_every`` clean steps."""
        if not finite:
            self.value /= 2.0
            self.clean = 0
            return
        self.clean += 1
        if self.clean >= self.growth_every:
            self.value *= 2.0
            self.clean = 0
