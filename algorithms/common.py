"""Parameters and helpers shared by the baseline policies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from algorithms.base import Aggregator, Weighting

Ratio = Annotated[float, Field(ge=0, le=0.95, allow_inf_nan=False)]
Rank = Annotated[int, Field(ge=1, le=4096)]


class CommonParams(BaseModel):
    """Keys every baseline accepts: LoRA depth, local steps and batch override the run's defaults."""

    model_config = ConfigDict(extra="forbid")
    lora_depth: Annotated[int, Field(ge=1)] | None = None
    local_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    aggregator: Aggregator = "svd"
    weighting: Weighting = "data_size"
