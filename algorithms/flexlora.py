"""``flexlora``: heterogeneous per-device LoRA ranks, SVD redistribution of the aggregated update, no pruning.

FlexLoRA (Bai et al., NeurIPS 2024, arXiv 2402.11505; ``docs/method.md`` section 4): every device trains
at its own rank; the server reconstructs each ΔW_i = s_i B_i A_i, averages them (weighted by data
size, ``svd``), and each device receives the truncated SVD of the global ΔW at its rank. Ranks are
assigned as in :mod:`algorithms.hetlora` (prior-free speed quantiles, or random); no rank
self-pruning and no structured pruning.
"""

from __future__ import annotations

from algorithms.base import Aggregator
from algorithms.hetlora import HeteroRank, HeteroRankParams
from algorithms.registry import register


class FlexLoRAParams(HeteroRankParams):
    aggregator: Aggregator = "svd"


@register
class FlexLoRA(HeteroRank):
    name = "flexlora"
    Params = FlexLoRAParams
    aggregator = "svd"
    resize = "svd"
