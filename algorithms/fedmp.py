"""``fedmp``: a per-device bandit over the pruning ratio only, at one fixed LoRA rank.

After FedMP (Jiang et al., "FedMP: Federated Learning through Adaptive Model Pruning in Heterogeneous
Edge Computing", ICDE 2022): a multi-armed bandit picks
each device's pruning ratio online, without prior knowledge of the devices. FedMP's own bandit
equations are not public; here the arms are ``prune_grid`` cumulative ratios in [0, P] inside the
same monotone window as FedSpine (:func:`algorithms.schedule.window`), the bandit is discounted
UCB (``ducb``, Garivier & Moulines 2011) by default, and the reward is :mod:`algorithms.rewards`'.
FedMP's R2SP synchronisation is replaced by the ``svd`` masked aggregation.
"""

from __future__ import annotations

from algorithms.common import Rank
from algorithms.fedspine import BanditName, BanditPolicy, BanditPolicyParams
from algorithms.registry import register


class FedMPParams(BanditPolicyParams):
    rank: Rank = 8
    bandit: BanditName = "ducb"


@register
class FedMP(BanditPolicy):
    name = "fedmp"
    Params = FedMPParams

    def ranks(self) -> list[int]:
        return [self.params.rank]
