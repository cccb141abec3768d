"""Sending devnet transactions from anvil's unlocked accounts, with decoded reverts."""

from __future__ import annotations

from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from keeper.protocol.artifacts import load_artifact
from keeper.protocol.errors import RevertReason, decode_revert


class TransactionRevertedError(Exception):
    """A devnet transaction reverted; `reason` is the decoded Solidity error."""

    def __init__(self, action: str, reason: RevertReason) -> None:
        super().__init__(f"{action} reverted: {reason}")
        self.reason = reason


def connect(rpc_url: str) -> Web3:
    """A synchronous client for tooling; retries are off so a dead node fails at once."""
    return Web3(Web3.HTTPProvider(rpc_url, exception_retry_configuration=None))


def contract_at(w3: Web3, artifact: str, address: str) -> Contract:
    return w3.eth.contract(
        address=Web3.to_checksum_address(address), abi=load_artifact(artifact).abi
    )


def revert_reason(error: ContractLogicError) -> RevertReason:
    data = error.data
    if isinstance(data, dict):
        data = data.get("data", "")
    return decode_revert(data or "")


def send(w3: Web3, call: ContractFunction, sender: ChecksumAddress | str) -> TxReceipt:
    """Sends `call` from an unlocked account and waits for its receipt (anvil mines at once)."""
    try:
        tx_hash = call.transact({"from": Web3.to_checksum_address(sender)})
    except ContractLogicError as error:
        raise TransactionRevertedError(call.fn_name, revert_reason(error)) from None
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise TransactionRevertedError(call.fn_name, RevertReason("RevertedOnChain", {}))
    return receipt


def deploy(w3: Web3, artifact: str, sender: str, *args: Any) -> ChecksumAddress:
    compiled = load_artifact(artifact)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    constructor: ContractConstructor = factory.constructor(*args)
    try:
        tx_hash = constructor.transact({"from": Web3.to_checksum_address(sender)})
    except ContractLogicError as error:
        raise TransactionRevertedError(f"deploy {artifact}", revert_reason(error)) from None
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    address = receipt["contractAddress"]
    if receipt["status"] != 1 or address is None:
        raise TransactionRevertedError(f"deploy {artifact}", RevertReason("RevertedOnChain", {}))
    return address
