"""Strategy registry: name -> class. A new policy registers itself with :func:`register`."""

from __future__ import annotations

from algorithms.base import Strategy, StrategyContext

_REGISTRY: dict[str, type[Strategy]] = {}
_BUILTIN_LOADED = False


def register(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _REGISTRY:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    """Import the built-in strategy modules once (each registers itself on import; importing one of
    them directly beforehand, e.g. ``from algorithms.fedspine import FedSpine``, must not stop the rest)."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        import algorithms.comp  # noqa: F401, PLC0415
        import algorithms.fedapt  # noqa: F401, PLC0415
        import algorithms.fedlora  # noqa: F401, PLC0415
        import algorithms.fedlora_then_prune  # noqa: F401, PLC0415
        import algorithms.fedmp  # noqa: F401, PLC0415
        import algorithms.fedmp_fixed  # noqa: F401, PLC0415
        import algorithms.fedspine  # noqa: F401, PLC0415
        import algorithms.fixed  # noqa: F401, PLC0415
        import algorithms.flexlora  # noqa: F401, PLC0415
        import algorithms.hetlora  # noqa: F401, PLC0415
        import algorithms.legend  # noqa: F401, PLC0415
        import algorithms.mergesfl  # noqa: F401, PLC0415
        import algorithms.oracle  # noqa: F401, PLC0415
        import algorithms.prune_then_fedlora  # noqa: F401, PLC0415
        import algorithms.random_arms  # noqa: F401, PLC0415
        import algorithms.splitfed  # noqa: F401, PLC0415


def strategy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_strategy_class(name: str) -> type[Strategy]:
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown strategy {name!r}; allowed: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_strategy(name: str, params: dict, ctx: StrategyContext) -> Strategy:
    cls = get_strategy_class(name)
    return cls(cls.Params.model_validate(params), ctx)
