"""Waits the fault scenarios share, for a keeper running on the test's event loop: each ends as
soon as its condition holds on chain (or in the keeper's progress), and fails with the keeper's
log tail when it does not."""

from __future__ import annotations

from collections.abc import Iterable

from web3 import Web3
from web3.types import BlockIdentifier

from keeper.devnet.network import Devnet
from tests.keeper.helpers import (
    InProcessKeeper,
    Liquidation,
    liquidations,
    on_chain,
    wait_until_async,
)


async def chain_head(net: Devnet) -> int:
    return await on_chain(lambda: net.w3.eth.block_number)


async def until_block(running: InProcessKeeper, net: Devnet, block: int) -> None:
    """The chain has mined `block`."""

    async def reached() -> bool:
        return await chain_head(net) >= block

    await wait_until_async(reached, what=f"block {block} to be mined", source=running)


async def until_processed(running: InProcessKeeper, block: int) -> None:
    """The keeper has handled every block up to `block`."""

    async def reached() -> bool:
        return running.keeper.progress.last_block >= block

    await wait_until_async(reached, what=f"the keeper to process block {block}", source=running)


async def until_liquidated(
    running: InProcessKeeper, net: Devnet, accounts: Iterable[str], from_block: int
) -> list[Liquidation]:
    """Every one of `accounts` has a `CreditAccountLiquidated` since `from_block` (by anyone);
    returns those liquidations."""
    wanted = set(accounts)

    async def done() -> list[Liquidation] | None:
        found = await on_chain(liquidations, net, from_block)
        if wanted <= {liquidation.account for liquidation in found}:
            return [liquidation for liquidation in found if liquidation.account in wanted]
        return None

    return await wait_until_async(done, what=f"liquidation of {sorted(wanted)}", source=running)


async def nonce(net: Devnet, address: str, block: BlockIdentifier = "pending") -> int:
    """`address`'s transaction count at `block`: with "pending", a transaction the node accepted
    counts even if it is not mined yet."""
    count: int = await on_chain(
        net.w3.eth.get_transaction_count, Web3.to_checksum_address(address), block
    )
    return count
