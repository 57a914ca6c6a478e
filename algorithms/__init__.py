"""Decisions: the Strategy interface and registry, and the policies (fixed, random; FedSpine and
the baselines come with their own issue). Depends on ``devices`` for plan types, never on ``sim``."""

from algorithms.base import FleetView, Report, RoundReports, Strategy, StrategyContext
from algorithms.registry import get_strategy_class, make_strategy, strategy_names

__all__ = ["FleetView", "Report", "RoundReports", "Strategy", "StrategyContext", "get_strategy_class",
           "make_strategy", "strategy_names"]
