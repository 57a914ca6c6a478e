"""A shared wireless medium (one 802.11 access point) as a fluid processor-sharing queue.

802.11 CSMA/CA gives stations roughly equal channel-access opportunities, so a slow station drags
every station to about the same throughput (the "performance anomaly", Heusse et al., INFOCOM 2003,
https://hal.archives-ouvertes.fr/hal-01199120). With K concurrent transfers at link rates R_k, each gets::

    X = 1 / sum_k (1 / R_k)        bits/s (airtime shares sum to 1; X <= R_k always)

Because every active flow progresses at the same X, the channel tracks one cumulative service S(t)
(bits delivered to each flow since the channel started) and a heap of flows keyed by the service at
which they finish; arrivals and departures are O(log K). Link rates are taken at flow start.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import simpy


@dataclass(eq=False)
class Flow:
    event: simpy.Event
    finish_service: float
    inv_rate: float
    active: bool = True


class SharedChannel:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self._heap: list[tuple[float, int, Flow]] = []
        self._service = 0.0
        self._t_last = env.now
        self._inv_sum = 0.0
        self._n_active = 0
        self._seq = 0
        self._gen = 0

    def state(self) -> dict:
        """The service counters of an idle channel, for round-boundary checkpoints (``sim.checkpoint``)."""
        if self._n_active:
            raise RuntimeError(f"cannot checkpoint a channel with {self._n_active} active flows")
        return {"service": self._service, "t_last": self._t_last, "inv_sum": self._inv_sum, "seq": self._seq,
                "gen": self._gen}

    def set_state(self, st: dict) -> None:
        """Restore :meth:`state` onto an idle channel."""
        self._service, self._t_last, self._inv_sum = st["service"], st["t_last"], st["inv_sum"]
        self._seq, self._gen = st["seq"], st["gen"]

    @property
    def active_flows(self) -> int:
        return self._n_active

    def _advance(self) -> None:
        now = self.env.now
        if self._n_active:
            self._service += (now - self._t_last) / self._inv_sum
        self._t_last = now

    def start(self, bits: float, rate_bps: float) -> Flow:
        """Begin moving ``bits`` over a link of ``rate_bps``; ``flow.event`` fires when done."""
        self._advance()
        flow = Flow(self.env.event(), self._service + bits, 1.0 / rate_bps)
        self._seq += 1
        heapq.heappush(self._heap, (flow.finish_service, self._seq, flow))
        self._inv_sum += flow.inv_rate
        self._n_active += 1
        self._schedule()
        return flow

    def cancel(self, flow: Flow) -> None:
        """Abort a flow (device failed or was cut off); the others speed up."""
        if not flow.active:
            return
        self._advance()
        self._deactivate(flow)
        self._schedule()

    def _deactivate(self, flow: Flow) -> None:
        flow.active = False
        self._n_active -= 1
        self._inv_sum -= flow.inv_rate
        if self._n_active == 0:
            self._inv_sum = 0.0  # drop accumulated rounding

    def _schedule(self) -> None:
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
        self._gen += 1
        if not self._heap:
            return
        dt = max(0.0, (self._heap[0][0] - self._service) * self._inv_sum)
        gen = self._gen
        self.env.timeout(dt).callbacks.append(lambda _e: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        if gen != self._gen:
            return  # superseded by a later arrival or departure
        self._advance()
        finished = []
        _, _, head = heapq.heappop(self._heap)
        self._service = max(self._service, head.finish_service)
        self._deactivate(head)
        finished.append(head)
        while self._heap:
            f = self._heap[0][2]
            if not f.active:
                heapq.heappop(self._heap)
            elif f.finish_service <= self._service * (1 + 1e-12):
                heapq.heappop(self._heap)
                self._deactivate(f)
                finished.append(f)
            else:
                break
        self._schedule()
        for f in finished:
            f.event.succeed()
