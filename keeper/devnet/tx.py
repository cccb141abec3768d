"""Sending devnet transactions from anvil's unlocked accounts, with decoded reverts."""

from __future__ import annotations

from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxParams, TxReceipt

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


def _transact(
    w3: Web3, action: str, call: ContractFunction | ContractConstructor, sender: str
) -> TxReceipt:
    """Sends from an unlocked account and waits for the receipt (anvil mines at once); a revert,
    at estimation or on chain, raises with its decoded reason."""
    params: TxParams = {"from": Web3.to_checksum_address(sender)}
    try:
        tx_hash = call.transact(params)
    except ContractLogicError as error:
        raise TransactionRevertedError(action, revert_reason(error)) from None
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise TransactionRevertedError(action, RevertReason("RevertedOnChain", {}))
    return receipt


def send(w3: Web3, call: ContractFunction, sender: ChecksumAddress | str) -> TxReceipt:
    return _transact(w3, call.fn_name, call, sender)


def deploy(w3: Web3, artifact: str, sender: str, *args: Any) -> ChecksumAddress:
    compiled = load_artifact(artifact)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    receipt = _transact(w3, f"deploy {artifact}", factory.constructor(*args), sender)
    address = receipt["contractAddress"]
    if address is None:
        raise TransactionRevertedError(f"deploy {artifact}", RevertReason("NoContractCreated", {}))
    return address
