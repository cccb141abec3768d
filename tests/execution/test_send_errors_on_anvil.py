"""anvil's real refusals of eth_sendRawTransaction, read by `classify_send_error`, and its rule for
replacements, so neither the classifier's table nor the fee module's bump can drift from the node.

One anvil for the module; each test sends from its own account so the tests do not share nonces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_typing import HexStr
from web3 import Web3
from web3.types import RPCEndpoint

from keeper.devnet.anvil import AnvilNode
from keeper.devnet.tx import connect
from keeper.execution.errors import SendErrorKind, classify_send_error
from keeper.execution.fees import DEFAULT_MIN_BUMP_BPS, Eip1559Fees, bumped_fees, initial_fees
from keeper.execution.signer import Signer, signer_from_env

pytestmark = pytest.mark.chain

GWEI = 10**9
CAP = 1_000 * GWEI
RECIPIENT = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    with AnvilNode(accounts=6) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def w3(node: AnvilNode) -> Web3:
    return connect(node.rpc_url)


def signer(node: AnvilNode, index: int) -> Signer:
    return signer_from_env("KEY", {"KEY": node.keys()[index].private_key})


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response
    return response["result"]


def raw_tx(sender: Signer, nonce: int, fees: Eip1559Fees, *, value: int = 1) -> str:
    tx = {
        "chainId": 31337,
        "nonce": nonce,
        "to": RECIPIENT,
        "value": value,
        "gas": 21_000,
        "maxFeePerGas": fees.max_fee_per_gas,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        "type": 2,
    }
    return sender.sign_transaction(tx).raw_transaction


def accepted(w3: Web3, raw: str) -> HexStr:
    tx_hash: HexStr = rpc(w3, "eth_sendRawTransaction", raw)
    return tx_hash


def refused(w3: Web3, raw: str) -> tuple[str, int]:
    """The node's error message and code; fails if the node took the transaction."""
    response = w3.provider.make_request(RPCEndpoint("eth_sendRawTransaction"), [raw])
    assert "error" in response, f"accepted: {response}"
    return response["error"]["message"], response["error"]["code"]


def assert_kind(refusal: tuple[str, int], expected: SendErrorKind) -> None:
    message, code = refusal
    assert classify_send_error(message, code) is expected, f"anvil said {message!r} ({code})"


def base_fee(w3: Web3) -> int:
    return int(rpc(w3, "eth_getBlockByNumber", "pending", False)["baseFeePerGas"], 16)


@pytest.fixture
def manual_mining(w3: Web3) -> Iterator[None]:
    """Transactions wait in the pool, where they can be resent and replaced."""
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "evm_setAutomine", True)


def test_nonce_too_low(w3: Web3, node: AnvilNode) -> None:
    sender = signer(node, 0)
    fees = initial_fees(base_fee(w3), GWEI, max_fee_cap=CAP)
    # anvil mines after it answers the send: until the block exists, nonce 0 is still in the pool
    # and a second send is judged as a replacement.
    w3.eth.wait_for_transaction_receipt(accepted(w3, raw_tx(sender, 0, fees)), timeout=30)
    assert_kind(refused(w3, raw_tx(sender, 0, fees, value=2)), SendErrorKind.NONCE_TOO_LOW)


def test_insufficient_funds(w3: Web3) -> None:
    penniless = signer_from_env("KEY", {"KEY": Account.create().key.hex()})
    fees = initial_fees(base_fee(w3), GWEI, max_fee_cap=CAP)
    assert_kind(refused(w3, raw_tx(penniless, 0, fees)), SendErrorKind.INSUFFICIENT_FUNDS)


def test_max_fee_below_base_fee(w3: Web3, node: AnvilNode) -> None:
    rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(10 * GWEI))
    below = Eip1559Fees(max_fee_per_gas=5 * GWEI, max_priority_fee_per_gas=GWEI)
    assert_kind(refused(w3, raw_tx(signer(node, 1), 0, below)), SendErrorKind.FEE_TOO_LOW)


@pytest.mark.usefixtures("manual_mining")
def test_already_known_and_replacement_underpriced(w3: Web3, node: AnvilNode) -> None:
    sender = signer(node, 2)
    fees = initial_fees(base_fee(w3), GWEI, max_fee_cap=CAP)
    first = raw_tx(sender, 0, fees)
    accepted(w3, first)
    assert_kind(refused(w3, first), SendErrorKind.ALREADY_KNOWN)
    # A different transaction at the same nonce and max fee: geth's 10 % on the tip is no help.
    same_max_fee = Eip1559Fees(fees.max_fee_per_gas, fees.max_priority_fee_per_gas * 11 // 10)
    assert_kind(
        refused(w3, raw_tx(sender, 0, same_max_fee, value=2)),
        SendErrorKind.REPLACEMENT_UNDERPRICED,
    )


@pytest.mark.usefixtures("manual_mining")
def test_anvil_replaces_on_any_higher_max_fee_and_takes_the_default_bump(
    w3: Web3, node: AnvilNode
) -> None:
    """The fee module's docstring: anvil looks at the max fee only, and 1 wei more is enough;
    the default (geth's 10 %) bump is therefore always accepted."""
    sender = signer(node, 3)
    fees = initial_fees(base_fee(w3), GWEI, max_fee_cap=CAP)
    accepted(w3, raw_tx(sender, 0, fees))
    one_wei_more = Eip1559Fees(fees.max_fee_per_gas + 1, fees.max_priority_fee_per_gas)
    accepted(w3, raw_tx(sender, 0, one_wei_more, value=2))
    bumped = bumped_fees(
        one_wei_more, base_fee(w3), min_bump_bps=DEFAULT_MIN_BUMP_BPS, max_fee_cap=CAP
    )
    assert bumped is not None
    last = accepted(w3, raw_tx(sender, 0, bumped, value=3))
    rpc(w3, "evm_mine")
    assert rpc(w3, "eth_getTransactionReceipt", last)["status"] == "0x1"
