"""The benchmark devnet: anvil with the reference protocol and N Credit Accounts.

Accounts are opened by `BulkAccountOpener`, a thousand per transaction, under a raised block gas
limit (opening costs ~310k gas an account: 100,000 accounts take about two minutes). Before any
measurement the gas limit goes back to a mainnet-like 30M and anvil mines a block a second, so
liquidations compete for block space as they would on a real chain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.types import RPCEndpoint

from bench.population import AccountPlan, Population
from keeper.devnet.anvil import AnvilNode
from keeper.devnet.deploy import Deployment, Roles, deploy_protocol
from keeper.devnet.manifest import Manifest
from keeper.devnet.spec import DEFAULT_SPEC
from keeper.devnet.tx import connect, deploy
from keeper.protocol.calls import function_abi
from keeper.protocol.events import CreditAccountOpened, event_topics

BUILD_GAS_LIMIT = 2_000_000_000
MEASURED_GAS_LIMIT = 30_000_000
# anvil 1.7 rebuilds its whole state trie for every block it mines: an empty block takes ~0.4 s at
# 20,000 accounts and ~2 s at 100,000 (fixed upstream in foundry-rs/foundry#15715, not released on
# npm yet). A block interval below that leaves transactions waiting in the pool for tens of
# seconds, so the interval is this multiple of the measured time to mine one, and at least 1 s.
_BLOCK_TIME_PER_MINING_TIME = 2
_ACCOUNTS_PER_TX = 4_000
_GAS_PER_OPEN = 400_000  # measured ~310k; the rest is headroom, so no estimate is needed
# anvil keeps a copy of the state per block (by default all: 8 GB at 60,000 accounts). Only recent
# states are needed: the keeper reads at its head, the baselines scan a block or two back.
_KEPT_STATES = 32

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchDevnet:
    node: AnvilNode
    w3: Web3
    deployment: Deployment
    roles: Roles
    population: Population
    victims: tuple[tuple[str, ...], ...]  # per round, the accounts it liquidates
    accounts: tuple[str, ...]  # every account, in opening order
    build_s: float
    block_time_s: int  # anvil's interval, from how long it takes to mine a block of this state

    @property
    def manager(self) -> str:
        return self.deployment.address("CreditManager.USDC")

    def manifest(self) -> Manifest:
        return Manifest(self.node.rpc_url, self.node.ws_url, self.deployment, self.roles, ())


@contextmanager
def bench_devnet(population: Population, progress: Progress) -> Iterator[BenchDevnet]:
    """A running devnet holding `population`; anvil stops on the way out."""
    started = time.monotonic()
    with AnvilNode(gas_limit=BUILD_GAS_LIMIT, kept_states=_KEPT_STATES) as node:
        roles = Roles.from_keys(node.keys())
        deployment = deploy_protocol(node.rpc_url, DEFAULT_SPEC, roles)
        w3 = connect(node.rpc_url)
        accounts = _open_accounts(w3, deployment, roles, population, progress)
        w3.provider.make_request(RPCEndpoint("evm_setBlockGasLimit"), [hex(MEASURED_GAS_LIMIT)])
        mining_started = time.monotonic()
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        mining_s = time.monotonic() - mining_started
        block_time_s = max(1, math.ceil(_BLOCK_TIME_PER_MINING_TIME * mining_s))
        progress(f"anvil mines a block in {mining_s:.2f} s: one block every {block_time_s} s")
        w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [block_time_s])
        victims: list[list[str]] = [[] for _ in population.group_sizes]
        for plan, account in zip(population.accounts, accounts, strict=True):
            if plan.group is not None:
                victims[plan.group].append(account)
        yield BenchDevnet(
            node,
            w3,
            deployment,
            roles,
            population,
            tuple(tuple(group) for group in victims),
            tuple(accounts),
            time.monotonic() - started,
            block_time_s,
        )


def _open_accounts(
    w3: Web3, deployment: Deployment, roles: Roles, population: Population, progress: Progress
) -> list[str]:
    """Opens the planned accounts in order; returns their addresses in the same order.

    Raw JSON-RPC, not web3's contract layer: a receipt of 4,000 openings holds 16,000 logs, and
    formatting them through web3 cost more time than anvil took to execute the transaction."""
    admin = roles.deployer.address
    opener = deploy(w3, "BulkAccountOpener", admin)
    open_many = function_abi("BulkAccountOpener", "openMany")
    mint = function_abi("TestToken", "mint")
    manager = deployment.address("CreditManager.USDC")
    opened_topic = event_topics(CreditAccountOpened)[0]
    accounts: list[str] = []
    total = len(population.accounts)
    last_report = 0.0
    for chunk in _chunks(population.accounts):
        token = deployment.address(chunk[0].collateral_token)
        collaterals = [plan.collateral for plan in chunk]
        _transact(w3, admin, token, mint.encode(opener, sum(collaterals)), gas=100_000)
        data = open_many.encode(manager, token, [population.debt] * len(chunk), collaterals)
        receipt = _transact(w3, admin, opener, data, gas=_GAS_PER_OPEN * len(chunk))
        accounts += [
            Web3.to_checksum_address("0x" + entry["topics"][1][-40:])
            for entry in receipt["logs"]
            if entry["topics"][0] == opened_topic
        ]
        if time.monotonic() - last_report >= 5 or len(accounts) == total:
            last_report = time.monotonic()
            progress(f"opened {len(accounts):,}/{total:,} accounts")
    if len(accounts) != total:
        raise RuntimeError(f"opened {len(accounts)} accounts, planned {total}")
    return accounts


def _transact(w3: Web3, sender: str, to: str, data: str, *, gas: int) -> dict[str, Any]:
    """Sends from an unlocked devnet account and returns the raw receipt (anvil mines at once
    while the devnet is built); a revert raises."""
    tx = {"from": sender, "to": to, "data": data, "gas": hex(gas)}
    tx_hash = _raw(w3, "eth_sendTransaction", [tx])
    receipt: dict[str, Any] | None = _raw(w3, "eth_getTransactionReceipt", [tx_hash])
    while receipt is None:
        time.sleep(0.01)
        receipt = _raw(w3, "eth_getTransactionReceipt", [tx_hash])
    if int(receipt["status"], 16) != 1:
        raise RuntimeError(f"transaction {tx_hash} to {to} reverted")
    return receipt


def _raw(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), params)
    if "error" in response:
        raise RuntimeError(f"{method} failed: {response['error']}")
    return response["result"]


def _chunks(plans: tuple[AccountPlan, ...]) -> Iterator[list[AccountPlan]]:
    """Runs of at most `_ACCOUNTS_PER_TX` consecutive plans sharing a collateral token."""
    chunk: list[AccountPlan] = []
    for plan in plans:
        if chunk and (
            len(chunk) == _ACCOUNTS_PER_TX or plan.collateral_token != chunk[0].collateral_token
        ):
            yield chunk
            chunk = []
        chunk.append(plan)
    if chunk:
        yield chunk
