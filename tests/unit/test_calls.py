"""Call encoding and output decoding with eth_abi, checked against web3's contract layer (no
chain: web3 only encodes here)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract

from keeper.devnet.tx import contract_at
from keeper.protocol.calls import (
    MULTICALL3_ADDRESS,
    Call,
    CallResult,
    feed_call,
    function_abi,
    manager_call,
    multicall_call,
    token_call,
)
from keeper.protocol.errors import RevertReason

ACCOUNT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
TO = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
TOKEN = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"


def web3_contract(artifact: str) -> Contract:
    return contract_at(Web3(), artifact, ACCOUNT)


@pytest.mark.parametrize(
    ("artifact", "name", "args"),
    [
        ("CreditManager", "liquidateCreditAccount", (ACCOUNT, TO)),
        ("CreditManager", "balanceOf", (ACCOUNT, TOKEN)),
        ("CreditManager", "creditAccounts", (0, 2**256 - 1)),
        ("CreditManager", "setFees", (1_000, 150, 65_535)),
        ("CreditManager", "calcLiquidationPayout", (10**24, 10**21, 7, 0)),
        ("CreditManager", "underlying", ()),
        ("TestToken", "balanceOf", (ACCOUNT,)),
        ("TestToken", "approve", (TO, 2**256 - 1)),
        ("PriceFeed", "updateAnswer", (-(2**255),)),
        ("PriceFeed", "getRoundData", (2**80 - 1,)),
        (
            "Multicall3",
            "aggregate3",
            (
                [
                    (ACCOUNT, True, bytes.fromhex("feaf968c")),
                    (TO, False, b""),
                    (TOKEN, True, bytes(range(70))),
                ],
            ),
        ),
        ("Multicall3", "aggregate3", ([],)),
    ],
)
def test_encode_equals_web3(artifact: str, name: str, args: tuple[Any, ...]) -> None:
    ours = function_abi(artifact, name).encode(*args)
    assert ours == web3_contract(artifact).encode_abi(name, args=list(args))
    assert ours.startswith("0x")


def test_selector_is_the_canonical_signature_hash() -> None:
    aggregate3 = function_abi("Multicall3", "aggregate3")
    assert aggregate3.input_types == ("(address,bool,bytes)[]",)
    assert aggregate3.output_types == ("(bool,bytes)[]",)
    assert aggregate3.selector == keccak(text="aggregate3((address,bool,bytes)[])")[:4]
    assert aggregate3.selector.hex() == "82ad56cb"
    liquidate = function_abi("CreditManager", "liquidateCreditAccount")
    assert liquidate.selector == keccak(text="liquidateCreditAccount(address,address)")[:4]
    assert liquidate.output_types == ()
    assert function_abi("TestToken", "balanceOf").selector.hex() == "70a08231"


def test_function_abi_is_built_once() -> None:
    assert function_abi("CreditManager", "paused") is function_abi("CreditManager", "paused")


def test_unknown_function_is_refused() -> None:
    with pytest.raises(KeyError, match=r"CreditManager.noSuchFunction: 0 functions"):
        function_abi("CreditManager", "noSuchFunction")


def test_decode_latest_round_data() -> None:
    raw = encode(
        ["uint80", "int256", "uint256", "uint256", "uint80"],
        [7, -5, 1_700_000_000, 1_700_000_001, 7],
    )
    latest = function_abi("PriceFeed", "latestRoundData")
    assert latest.decode(raw) == (7, -5, 1_700_000_000, 1_700_000_001, 7)
    assert latest.decode("0x" + raw.hex()) == (7, -5, 1_700_000_000, 1_700_000_001, 7)


def test_decode_checksums_address_outputs() -> None:
    owner = TO.lower()
    raw = encode(
        ["address", "uint256", "uint256", "uint256", "uint256"], [owner, 10**24, 10**27, 3, 4]
    )
    decoded = function_abi("CreditManager", "creditAccountInfo").decode(raw)
    assert decoded == (to_checksum_address(owner), 10**24, 10**27, 3, 4)
    assert decoded[0] == TO
    (underlying,) = function_abi("CreditManager", "underlying").decode(
        encode(["address"], [TOKEN.lower()])
    )
    assert underlying == TOKEN
    assert function_abi("CreditManager", "paused").decode(encode(["bool"], [True])) == (True,)


def test_decode_struct_and_aggregate3_results() -> None:
    # LiquidationPayout(amountPaid, repaidToPool, protocolFees, remainingFunds, loss)
    payout_abi = function_abi("CreditManager", "calcLiquidationPayout")
    assert payout_abi.output_types == ("(uint256,uint256,uint256,uint256,uint256)",)
    payout = (960, 900, 45, 15, 0)
    (decoded,) = payout_abi.decode(encode(list(payout_abi.output_types), [payout]))
    assert decoded == payout
    results = [(True, encode(["uint256"], [5])), (False, bytes.fromhex("deadbeef"))]
    (decoded_results,) = function_abi("Multicall3", "aggregate3").decode(
        encode(["(bool,bytes)[]"], [results])
    )
    assert list(decoded_results) == results


def test_call_helpers_target_and_encode() -> None:
    liquidate = manager_call(ACCOUNT, "liquidateCreditAccount", TO, TOKEN)
    assert liquidate == Call(
        ACCOUNT, function_abi("CreditManager", "liquidateCreditAccount"), (TO, TOKEN)
    )
    assert liquidate.data == web3_contract("CreditManager").encode_abi(
        "liquidateCreditAccount", args=[TO, TOKEN]
    )
    assert token_call(TOKEN, "balanceOf", ACCOUNT).function.input_types == ("address",)
    assert feed_call(TO, "latestRoundData").data == "0xfeaf968c"
    balance = multicall_call("getEthBalance", ACCOUNT)
    assert balance.target == MULTICALL3_ADDRESS
    assert Web3.is_checksum_address(MULTICALL3_ADDRESS)


def test_call_result_ok_follows_outputs() -> None:
    assert CallResult((), None).ok  # a call with no outputs that succeeded
    assert not CallResult(None, RevertReason("EmptyRevert", {"data": "0x"})).ok
