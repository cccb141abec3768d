"""EndpointBoard: the order endpoints are tried in, cooldowns, head verdicts and returns, on plain
data with a clock the test moves (no network)."""

from __future__ import annotations

import pytest

from keeper.chain.endpoints import (
    EndpointBoard,
    EndpointPolicy,
    EndpointState,
    EndpointStatus,
    SetAsideReason,
    Transition,
    head_verdict,
)
from keeper.chain.rpc import endpoint_labels

UP, DOWN = EndpointState.UP, EndpointState.DOWN
TRANSPORT, RATE_LIMITED = SetAsideReason.TRANSPORT, SetAsideReason.RATE_LIMITED
POLICY = EndpointPolicy(head_stall_s=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def board(count: int = 3) -> tuple[EndpointBoard, Clock]:
    clock = Clock()
    return EndpointBoard([f"http://node{i}:8545" for i in range(count)], POLICY, clock), clock


# ------------------------------------------------------------------ cooldowns


def test_cooldowns_double_per_consecutive_failure_up_to_their_cap() -> None:
    assert [POLICY.cooldown_s(TRANSPORT, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [POLICY.cooldown_s(RATE_LIMITED, n) for n in range(1, 6)] == [5, 10, 20, 40, 60]
    assert POLICY.cooldown_s(TRANSPORT, 10_000) == 30


def test_a_retry_after_lengthens_a_cooldown_but_not_past_its_cap() -> None:
    assert POLICY.cooldown_s(RATE_LIMITED, 1, retry_after_s=20) == 20
    assert POLICY.cooldown_s(RATE_LIMITED, 1, retry_after_s=1) == 5
    assert POLICY.cooldown_s(RATE_LIMITED, 1, retry_after_s=3600) == 60


# ------------------------------------------------------------------ routing


def test_requests_go_to_the_primary_then_to_backups_in_priority_order() -> None:
    endpoints, _ = board()
    assert endpoints.plan() == [0, 1, 2]

    change = endpoints.failed(0, TRANSPORT)

    assert change == Transition(0, UP, DOWN, TRANSPORT)
    assert endpoints.plan() == [1, 2, 0]  # the primary only as a last resort
    assert endpoints.preferred() == 1


def test_while_a_backup_serves_the_primary_returns_through_a_head_check_not_a_request() -> None:
    endpoints, clock = board()
    endpoints.failed(0, TRANSPORT)
    assert endpoints.has_other_up(0)

    clock.advance(1.01)
    # Its cooldown is over, but no request waits on it while a backup answers: it may hang.
    assert endpoints.plan() == [1, 2, 0]
    assert endpoints.is_set_aside(0)

    assert endpoints.judge_heads({0: 10, 1: 10, 2: 10}) == [Transition(0, DOWN, UP, None)]
    assert endpoints.plan() == [0, 1, 2]
    assert endpoints.succeeded(0) is None  # nothing to report twice


def test_with_no_endpoint_up_a_request_probes_the_one_whose_cooldown_ended() -> None:
    endpoints, clock = board()
    for index in (0, 1, 2):
        endpoints.failed(index, TRANSPORT)
    assert not endpoints.has_other_up(0)
    clock.advance(1.01)
    assert endpoints.plan() == [0, 1, 2]
    assert endpoints.succeeded(0) == Transition(0, DOWN, UP, None)
    assert endpoints.has_other_up(1)


def test_when_every_endpoint_is_set_aside_the_soonest_back_is_tried_first() -> None:
    endpoints, clock = board()
    endpoints.failed(1, TRANSPORT)
    endpoints.failed(2, TRANSPORT)
    for _ in range(2):  # primary: set aside, probed after 1 s, failed again: 2 s more
        endpoints.failed(0, TRANSPORT)
        clock.advance(1.0)
    endpoints.failed(0, TRANSPORT)

    assert endpoints.plan() == [1, 2, 0]
    clock.advance(0.5)
    assert endpoints.plan() == [1, 2, 0]  # endpoints 1 and 2 are past their cooldown


def test_many_failures_of_a_resting_endpoint_do_not_stretch_its_cooldown() -> None:
    endpoints, clock = board()
    assert endpoints.failed(0, TRANSPORT) is not None
    # Fifty requests that were in flight when the node died fail too.
    assert all(endpoints.failed(0, TRANSPORT) is None for _ in range(50))

    clock.advance(1.0)
    assert endpoints.due(0)


def test_a_failed_probe_doubles_the_cooldown_and_a_success_resets_it() -> None:
    endpoints, clock = board()
    endpoints.failed(0, TRANSPORT)
    clock.advance(1.0)
    assert endpoints.failed(0, TRANSPORT) is None  # still down: no second report

    clock.advance(1.5)
    assert not endpoints.due(0)
    clock.advance(0.5)
    assert endpoints.due(0)

    endpoints.succeeded(0)
    endpoints.failed(0, TRANSPORT)
    clock.advance(1.0)
    assert endpoints.due(0)


def test_a_rate_limited_endpoint_rests_longer_and_is_not_probed_meanwhile() -> None:
    endpoints, clock = board(2)
    change = endpoints.failed(0, RATE_LIMITED, retry_after_s=8)

    assert change == Transition(0, UP, EndpointState.RATE_LIMITED, RATE_LIMITED)
    assert not endpoints.may_probe(0)
    assert endpoints.may_probe(1)
    clock.advance(7.9)
    assert not endpoints.due(0)
    clock.advance(0.1)
    assert endpoints.may_probe(0)
    assert endpoints.due(0)


def test_a_new_reason_for_a_resting_endpoint_changes_its_state() -> None:
    endpoints, _ = board(2)
    endpoints.failed(0, TRANSPORT)

    change = endpoints.failed(0, RATE_LIMITED)

    assert change == Transition(0, DOWN, EndpointState.RATE_LIMITED, RATE_LIMITED)


# ------------------------------------------------------------------ chain identity


def test_a_wrong_chain_endpoint_returns_only_when_it_shows_the_right_chain() -> None:
    endpoints, clock = board(2)
    endpoints.chain_confirmed(0)
    wrong = SetAsideReason.WRONG_CHAIN

    assert endpoints.failed(0, wrong) == Transition(0, UP, EndpointState.WRONG_CHAIN, wrong)
    assert not endpoints.chain_verified(0)
    assert endpoints.refusing(0)
    assert endpoints.succeeded(0) is None
    assert endpoints.state(0) is EndpointState.WRONG_CHAIN

    clock.advance(1.0)
    assert not endpoints.refusing(0)
    assert endpoints.due(0)  # for another check
    assert endpoints.chain_confirmed(0) == Transition(0, EndpointState.WRONG_CHAIN, UP, None)
    assert endpoints.chain_verified(0)


def test_every_set_aside_makes_the_endpoint_show_its_chain_again() -> None:
    endpoints, _ = board(2)
    endpoints.chain_confirmed(0)
    endpoints.chain_confirmed(1)

    endpoints.failed(0, TRANSPORT)
    endpoints.forget_chain(1)

    assert not endpoints.chain_verified(0)
    assert not endpoints.chain_verified(1)
    endpoints.chain_confirmed(0)
    endpoints.chain_confirmed(1)
    endpoints.forget_chain()
    assert not endpoints.chain_verified(0)
    assert not endpoints.chain_verified(1)


# ------------------------------------------------------------------ heads


@pytest.mark.parametrize(
    ("head", "best", "unmoved_for_s", "verdict"),
    [
        (100, 100, 3600.0, None),  # standing still together: a devnet with mining stopped
        (99, 100, 29.9, None),  # one block behind and moving: normal propagation
        (99, 100, 30.0, SetAsideReason.STALLED),
        (92, 100, 0.0, None),  # 8 behind: still tolerated
        (91, 100, 0.0, SetAsideReason.BEHIND),
        (50, 100, 31.0, SetAsideReason.STALLED),  # both: stalled says more
    ],
)
def test_head_verdicts(
    head: int, best: int, unmoved_for_s: float, verdict: SetAsideReason | None
) -> None:
    assert head_verdict(head, best, unmoved_for_s, POLICY) == verdict


def test_endpoints_standing_still_together_stay_in_use() -> None:
    endpoints, clock = board()
    endpoints.judge_heads({0: 7, 1: 7, 2: 7})
    clock.advance(600)

    assert endpoints.judge_heads({0: 7, 1: 7, 2: 7}) == []
    assert [status.state for status in endpoints.statuses()] == [UP, UP, UP]


def test_an_endpoint_whose_head_stops_while_another_moves_on_is_stalled_until_it_catches_up() -> (
    None
):
    endpoints, clock = board(2)
    endpoints.judge_heads({0: 10, 1: 10})
    clock.advance(29)
    assert endpoints.judge_heads({0: 10, 1: 12}) == []  # not yet stalled long enough

    clock.advance(1)
    changes = endpoints.judge_heads({0: 10, 1: 13})

    assert changes == [Transition(0, UP, EndpointState.STALLED, SetAsideReason.STALLED)]
    assert endpoints.plan() == [1, 0]
    assert endpoints.succeeded(0) is None  # answering requests does not make it current
    clock.advance(60)
    assert endpoints.plan() == [1, 0]  # no cooldown ends it
    # Moving again but 3 behind: not yet back.
    assert endpoints.judge_heads({0: 11, 1: 14}) == []
    assert endpoints.judge_heads({0: 13, 1: 15}) == [Transition(0, EndpointState.STALLED, UP, None)]
    assert endpoints.preferred() == 0


def test_an_endpoint_far_behind_is_set_aside_at_once_and_returns_within_two_blocks() -> None:
    endpoints, _ = board(2)

    changes = endpoints.judge_heads({0: 100, 1: 109})

    assert changes == [Transition(0, UP, EndpointState.BEHIND, SetAsideReason.BEHIND)]
    assert endpoints.judge_heads({0: 106, 1: 109}) == []
    assert endpoints.judge_heads({0: 107, 1: 109}) == [
        Transition(0, EndpointState.BEHIND, UP, None)
    ]


def test_endpoints_that_did_not_answer_are_neither_judged_nor_compared() -> None:
    endpoints, clock = board(2)
    endpoints.judge_heads({0: 10, 1: 50})
    endpoints.failed(1, TRANSPORT)  # the far-ahead one is gone; the primary is the best we have

    assert endpoints.judge_heads({0: 10}) == [Transition(0, EndpointState.BEHIND, UP, None)]
    clock.advance(60)
    assert endpoints.judge_heads({0: 10}) == []
    assert endpoints.preferred() == 0


def test_a_down_endpoint_that_answers_a_head_check_is_back_unless_it_lags() -> None:
    endpoints, _ = board(3)
    endpoints.failed(1, TRANSPORT)
    endpoints.failed(2, TRANSPORT)

    changes = endpoints.judge_heads({0: 50, 1: 49, 2: 20})

    assert changes == [
        Transition(1, DOWN, UP, None),
        Transition(2, DOWN, EndpointState.BEHIND, SetAsideReason.BEHIND),
    ]


def test_only_a_head_check_or_another_chain_ends_a_stall() -> None:
    endpoints, clock = board(2)
    endpoints.judge_heads({0: 1, 1: 1})
    clock.advance(30)
    endpoints.judge_heads({0: 1, 1: 2})

    assert endpoints.failed(0, TRANSPORT) is None
    clock.advance(60)
    assert endpoints.plan() == [1, 0]
    assert endpoints.state(0) is EndpointState.STALLED

    wrong = SetAsideReason.WRONG_CHAIN
    assert endpoints.failed(0, wrong) == Transition(
        0, EndpointState.STALLED, EndpointState.WRONG_CHAIN, wrong
    )


# ------------------------------------------------------------------ what operators see


def test_statuses_name_state_preference_and_head() -> None:
    endpoints, _ = board(2)
    endpoints.judge_heads({1: 5})
    endpoints.failed(0, RATE_LIMITED)

    assert endpoints.statuses() == [
        EndpointStatus("http://node0:8545", EndpointState.RATE_LIMITED, False, None),
        EndpointStatus("http://node1:8545", UP, True, 5),
    ]


def test_endpoint_labels_are_redacted_and_unique() -> None:
    labels = endpoint_labels(
        [
            "https://eth.example.com/v2/KEY-ONE",
            "https://eth.example.com/v2/KEY-TWO",
            "http://10.0.0.5:8545",
            "https://eth.example.com/v2/KEY-THREE",
        ]
    )

    assert labels == [
        "https://eth.example.com/...",
        "https://eth.example.com/...#2",
        "http://10.0.0.5:8545",
        "https://eth.example.com/...#3",
    ]
