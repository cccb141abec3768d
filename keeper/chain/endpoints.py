"""Which RPC endpoint serves the next request, which are set aside, why, and for how long.

Plain data, an injected clock and no I/O: RpcClient reports what each endpoint did (failed,
answered, showed its head, proved or disproved its chain) and asks in which order to try them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class EndpointState(StrEnum):
    UP = "up"
    DOWN = "down"  # transport failures, HTTP errors or garbage answers
    RATE_LIMITED = "rate_limited"
    STALLED = "stalled"  # its head stopped while another endpoint's moved on
    BEHIND = "behind"  # far behind the best head
    WRONG_CHAIN = "wrong_chain"  # another chain id or genesis than the keeper started on


class SetAsideReason(StrEnum):
    TRANSPORT = "transport"
    HTTP = "http"
    INVALID_RESPONSE = "invalid_response"
    RATE_LIMITED = "rate_limited"
    STALLED = "stalled"
    BEHIND = "behind"
    WRONG_CHAIN = "wrong_chain"


_STATE_FOR_REASON = {
    SetAsideReason.TRANSPORT: EndpointState.DOWN,
    SetAsideReason.HTTP: EndpointState.DOWN,
    SetAsideReason.INVALID_RESPONSE: EndpointState.DOWN,
    SetAsideReason.RATE_LIMITED: EndpointState.RATE_LIMITED,
    SetAsideReason.STALLED: EndpointState.STALLED,
    SetAsideReason.BEHIND: EndpointState.BEHIND,
    SetAsideReason.WRONG_CHAIN: EndpointState.WRONG_CHAIN,
}
# States a cooldown ends: the next request probes the endpoint. Stalled and behind endpoints
# answer requests fine, so only a head check that finds them caught up brings them back.
_COOLING = frozenset({EndpointState.DOWN, EndpointState.RATE_LIMITED, EndpointState.WRONG_CHAIN})
# Set-aside states an answered request or head check ends.
_ENDED_BY_AN_ANSWER = frozenset({EndpointState.DOWN, EndpointState.RATE_LIMITED})
# Set-aside states only a head check ends.
_JUDGED_BY_HEADS = frozenset({EndpointState.STALLED, EndpointState.BEHIND})
# Doubling more often than this overflows long before anyone waits that long.
_MAX_DOUBLINGS = 32


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """When an endpoint is set aside, and for how long.

    A cooldown doubles with each consecutive failure and a success resets it. Rate limits start
    longer: a provider's window lasts seconds, and hammering it extends the ban; a numeric
    Retry-After lengthens the cooldown up to its cap.

    Heads: an endpoint whose head has not moved for `head_stall_s` while another endpoint's is
    higher is stalled. One more than `behind_blocks` behind the best head is behind even if it
    moves: 8 blocks is ~1.5 min on mainnet and far more than the 0-2 blocks by which healthy nodes
    differ, so only a node that is syncing or cut off from its peers lags that much. A stalled or
    behind endpoint returns once it is moving again and within `caught_up_blocks` of the best head
    (less than `behind_blocks`, so that one lagging at the threshold does not flap).
    """

    first_cooldown_s: float = 1.0
    max_cooldown_s: float = 30.0
    first_rate_limit_cooldown_s: float = 5.0
    max_rate_limit_cooldown_s: float = 60.0
    head_stall_s: float = 30.0
    behind_blocks: int = 8
    caught_up_blocks: int = 2

    def cooldown_s(
        self, reason: SetAsideReason, failures: int, retry_after_s: float | None = None
    ) -> float:
        """How long an endpoint set aside for the `failures`-th time in a row rests."""
        if reason is SetAsideReason.RATE_LIMITED:
            first, cap = self.first_rate_limit_cooldown_s, self.max_rate_limit_cooldown_s
        else:
            first, cap = self.first_cooldown_s, self.max_cooldown_s
        doublings: int = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        cooldown = min(first * 2.0**doublings, cap)
        if retry_after_s is not None:
            cooldown = max(cooldown, min(retry_after_s, cap))
        return cooldown


def head_verdict(
    head: int, best_head: int, unmoved_for_s: float, policy: EndpointPolicy
) -> SetAsideReason | None:
    """Why an endpoint at `head`, unmoved for `unmoved_for_s`, should not serve while another is
    at `best_head`; None when it may. Endpoints standing still together are all fine."""
    lag = best_head - head
    if lag > 0 and unmoved_for_s >= policy.head_stall_s:
        return SetAsideReason.STALLED
    if lag > policy.behind_blocks:
        return SetAsideReason.BEHIND
    return None


@dataclass(frozen=True, slots=True)
class Transition:
    """An endpoint changed state; `reason` says why it was set aside (None: it came back)."""

    index: int
    before: EndpointState
    after: EndpointState
    reason: SetAsideReason | None


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One endpoint as operators see it; `endpoint` is redacted, `head` None until checked."""

    endpoint: str
    state: EndpointState
    preferred: bool
    head: int | None


@dataclass(slots=True)
class _Record:
    state: EndpointState = EndpointState.UP
    set_aside_until: float = 0.0
    failures: int = 0  # consecutive set-asides; a success resets it
    chain_verified: bool = False
    head: int | None = None
    head_moved_at: float = 0.0


class EndpointBoard:
    """The health of endpoints in priority order: index 0 is the primary, the rest backups."""

    def __init__(
        self,
        labels: Sequence[str],
        policy: EndpointPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not labels:
            raise ValueError("at least one endpoint is needed")
        self._labels = list(labels)
        self._records = [_Record() for _ in labels]
        self._policy = policy or EndpointPolicy()
        self._clock = clock

    @property
    def policy(self) -> EndpointPolicy:
        return self._policy

    def plan(self) -> list[int]:
        """The order in which to try endpoints for one request: those up by priority, then those
        whose cooldown has ended (the request probes them), then, as a last resort, the others
        by soonest end of cooldown. While one is up, a request never waits on a probe: the
        head checks (`judge_heads`) bring the others back."""
        now = self._clock()
        up = [i for i, record in enumerate(self._records) if record.state is EndpointState.UP]
        cooled = [i for i in range(len(self._records)) if self.due(i)]
        resting = sorted(
            (i for i, record in enumerate(self._records) if not self._ready(record, now)),
            key=lambda i: (self._records[i].set_aside_until, i),
        )
        return up + cooled + resting

    def due(self, index: int) -> bool:
        """Whether a set-aside endpoint's cooldown has ended: the next probe of it may bring
        it back."""
        record = self._records[index]
        return record.state is not EndpointState.UP and self._ready(record, self._clock())

    def has_other_up(self, index: int) -> bool:
        """Whether an endpoint other than `index` is up: then `index` need not be waited on."""
        return any(
            record.state is EndpointState.UP for i, record in enumerate(self._records) if i != index
        )

    def preferred(self) -> int:
        """The endpoint the next request goes to first."""
        return self.plan()[0]

    def state(self, index: int) -> EndpointState:
        return self._records[index].state

    def head(self, index: int) -> int | None:
        return self._records[index].head

    def is_set_aside(self, index: int) -> bool:
        return self._records[index].state is not EndpointState.UP

    def may_probe(self, index: int) -> bool:
        """False while a rate-limited endpoint's cooldown runs: probing it would prolong it."""
        record = self._records[index]
        return not (
            record.state is EndpointState.RATE_LIMITED and self._clock() < record.set_aside_until
        )

    def refusing(self, index: int) -> bool:
        """True while an endpoint found on another chain rests: it is not asked again yet."""
        record = self._records[index]
        return record.state is EndpointState.WRONG_CHAIN and self._clock() < record.set_aside_until

    def chain_verified(self, index: int) -> bool:
        return self._records[index].chain_verified

    def forget_chain(self, index: int | None = None) -> None:
        """The endpoint (every endpoint when None) must prove its chain again before serving."""
        for i, record in enumerate(self._records):
            if index is None or i == index:
                record.chain_verified = False

    def failed(
        self, index: int, reason: SetAsideReason, retry_after_s: float | None = None
    ) -> Transition | None:
        """The endpoint exhausted its attempts or proved to be on another chain: set aside.

        A failure while it rests for the same reason changes nothing: many requests in flight
        when a node dies must not stretch its cooldown. One after the cooldown (a failed probe)
        lengthens the next cooldown. A stalled or behind endpoint stays so until a head check
        finds it caught up, unless it turns out to serve another chain.
        """
        record = self._records[index]
        now = self._clock()
        state = _STATE_FOR_REASON[reason]
        if (record.state is state and now < record.set_aside_until) or (
            record.state in _JUDGED_BY_HEADS and state is not EndpointState.WRONG_CHAIN
        ):
            return None
        before = record.state
        record.failures += 1
        record.state = state
        record.set_aside_until = now + self._policy.cooldown_s(
            reason, record.failures, retry_after_s
        )
        record.chain_verified = False
        return Transition(index, before, state, reason) if state is not before else None

    def succeeded(self, index: int) -> Transition | None:
        """The endpoint answered a request: a down or rate-limited one is back."""
        record = self._records[index]
        record.failures = 0
        if record.state in _ENDED_BY_AN_ANSWER:
            return self._restore(index)
        return None

    def chain_confirmed(self, index: int) -> Transition | None:
        """The endpoint proved it serves the expected chain: one refused before is back."""
        record = self._records[index]
        record.chain_verified = True
        if record.state is EndpointState.WRONG_CHAIN:
            record.failures = 0
            return self._restore(index)
        return None

    def judge_heads(self, heads: Mapping[int, int]) -> list[Transition]:
        """Records the heads that endpoints just reported, sets aside those stalled or far
        behind the best of them, and brings back the ones that answered and caught up.

        Endpoints missing from `heads` did not answer (or are on another chain) and are neither
        compared nor judged.
        """
        now = self._clock()
        for index, head in heads.items():
            record = self._records[index]
            if record.head != head:
                record.head, record.head_moved_at = head, now
        best = max(heads.values(), default=0)
        changes = []
        for index in sorted(heads):
            record = self._records[index]
            if record.state is EndpointState.WRONG_CHAIN:
                continue
            verdict = head_verdict(heads[index], best, now - record.head_moved_at, self._policy)
            change = self._judged(index, verdict, best - heads[index])
            if change is not None:
                changes.append(change)
        return changes

    def statuses(self) -> list[EndpointStatus]:
        preferred = self.preferred()
        return [
            EndpointStatus(label, record.state, i == preferred, record.head)
            for i, (label, record) in enumerate(zip(self._labels, self._records, strict=True))
        ]

    def _judged(self, index: int, verdict: SetAsideReason | None, lag: int) -> Transition | None:
        record = self._records[index]
        before = record.state
        if verdict is not None:
            after = _STATE_FOR_REASON[verdict]
            if after is before:
                return None
            record.state, record.set_aside_until = after, math.inf
            record.chain_verified = False
            return Transition(index, before, after, verdict)
        if before in _ENDED_BY_AN_ANSWER or (
            before in _JUDGED_BY_HEADS and lag <= self._policy.caught_up_blocks
        ):
            record.failures = 0
            return self._restore(index)
        return None

    def _restore(self, index: int) -> Transition:
        record = self._records[index]
        before = record.state
        record.state, record.set_aside_until = EndpointState.UP, 0.0
        return Transition(index, before, EndpointState.UP, None)

    @staticmethod
    def _ready(record: _Record, now: float) -> bool:
        return record.state is EndpointState.UP or (
            record.state in _COOLING and now >= record.set_aside_until
        )
