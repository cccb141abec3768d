"""eth_call and Multicall3 batches through the keeper's RpcClient, on the devnet: decoded outputs
equal web3's, a failing call in a batch is reported in place with its decoded revert, and a
reverting eth_call raises with the decoded reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from web3 import Web3

from keeper.chain.rpc import RpcClient, RpcError
from keeper.devnet.controls import set_price
from keeper.devnet.network import Devnet
from keeper.protocol.calls import (
    Call,
    CallRevertedError,
    eth_call,
    feed_call,
    function_abi,
    manager_call,
    multicall,
    multicall_call,
    token_call,
)
from tests.contracts.helpers import fresh_address, market, open_account, units

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def rpc(chain: Devnet) -> AsyncIterator[RpcClient]:
    client = RpcClient(chain.node.rpc_url, timeout_s=5.0, attempts=2, max_backoff_s=0.05)
    try:
        yield client
    finally:
        await client.close()


async def test_multicall_reads_views_and_reports_a_revert_in_place(
    chain: Devnet, rpc: RpcClient
) -> None:
    usdc = market(chain)
    manager = usdc.manager.address
    feed = chain.deployment.contract(chain.w3, "PriceFeed.WETH")
    unknown = fresh_address("no-such-account")
    keeper = chain.roles.keeper.address

    results = await multicall(
        rpc,
        [
            manager_call(manager, "underlying"),
            manager_call(manager, "paused"),
            feed_call(feed.address, "latestRoundData"),
            manager_call(manager, "calcHealthFactor", unknown),
            token_call(usdc.underlying.address, "balanceOf", keeper),
            multicall_call("getEthBalance", keeper),
        ],
    )

    assert [result.ok for result in results] == [True, True, True, False, True, True]
    assert results[0].outputs == (usdc.underlying.address,)
    assert results[0].outputs == (usdc.manager.functions.underlying().call(),)
    assert results[1].outputs == (False,)
    assert results[2].outputs == tuple(feed.functions.latestRoundData().call())
    assert results[2].outputs[1] == 3_000 * 10**8
    failed = results[3]
    assert failed.outputs is None
    assert failed.revert is not None
    assert failed.revert.name == "UnknownCreditAccount"
    assert failed.revert.args == {"creditAccount": unknown}
    assert results[4].outputs == (usdc.underlying.functions.balanceOf(keeper).call(),)
    assert results[5].outputs == (chain.w3.eth.get_balance(Web3.to_checksum_address(keeper)),)
    for result in results:
        if result.ok:
            assert result.revert is None


async def test_multicall_at_a_past_block(chain: Devnet, rpc: RpcClient) -> None:
    feed = chain.deployment.address("PriceFeed.WETH")
    before = chain.w3.eth.block_number
    changed_in = set_price(
        chain.w3, chain.deployment, "WETH", 2_500 * 10**8, chain.roles.deployer.address
    )
    read = feed_call(feed, "latestRoundData")

    (old,) = await multicall(rpc, [read], block=before)
    (new,) = await multicall(rpc, [read], block=changed_in)
    (latest,) = await multicall(rpc, [read])

    assert old.outputs is not None
    assert new.outputs is not None
    assert old.outputs[1] == 3_000 * 10**8
    assert new.outputs[1] == 2_500 * 10**8
    assert latest == new
    assert new.outputs[0] == old.outputs[0] + 1  # the next round


async def test_empty_batch_needs_no_call(rpc: RpcClient) -> None:
    assert await multicall(rpc, []) == []


async def test_eth_call_returns_decoded_outputs(chain: Devnet, rpc: RpcClient) -> None:
    usdc = market(chain)
    opened = open_account(
        chain,
        chain.roles.borrowers[0].address,
        units(chain, "USDC", 1_000),
        units(chain, "USDC", 500),
    )
    info = await eth_call(
        rpc, manager_call(usdc.manager.address, "creditAccountInfo", opened.address)
    )
    assert info == tuple(usdc.manager.functions.creditAccountInfo(opened.address).call())
    assert info[0] == opened.owner
    assert await eth_call(rpc, manager_call(usdc.manager.address, "creditAccountsCount")) == (1,)
    (health,) = await eth_call(
        rpc, manager_call(usdc.manager.address, "calcHealthFactor", opened.address)
    )
    assert health == usdc.manager.functions.calcHealthFactor(opened.address).call()
    assert health > 10**18


async def test_eth_call_revert_raises_with_the_decoded_reason(
    chain: Devnet, rpc: RpcClient
) -> None:
    manager = market(chain).manager.address
    unknown = fresh_address("another-unknown")

    with pytest.raises(CallRevertedError) as raised:
        await eth_call(rpc, manager_call(manager, "calcHealthFactor", unknown))

    assert raised.value.function == "calcHealthFactor"
    assert raised.value.reason.name == "UnknownCreditAccount"
    assert raised.value.reason.args == {"creditAccount": unknown}
    assert str(raised.value) == (
        f"calcHealthFactor reverted: UnknownCreditAccount(creditAccount={unknown})"
    )


async def test_eth_call_as_a_sender_sees_the_liquidation_refused(
    chain: Devnet, rpc: RpcClient
) -> None:
    usdc = market(chain)
    keeper = chain.roles.keeper.address
    opened = open_account(
        chain,
        chain.roles.borrowers[0].address,
        units(chain, "USDC", 1_000),
        units(chain, "USDC", 500),
    )
    health = usdc.manager.functions.calcHealthFactor(opened.address).call()

    with pytest.raises(CallRevertedError) as raised:
        await eth_call(
            rpc,
            manager_call(usdc.manager.address, "liquidateCreditAccount", opened.address, keeper),
            sender=keeper,
        )

    assert raised.value.function == "liquidateCreditAccount"
    assert raised.value.reason.name == "NotLiquidatable"
    assert raised.value.reason.args == {"healthFactor": health}


async def test_an_rpc_error_that_is_not_a_revert_is_not_disguised_as_one(rpc: RpcClient) -> None:
    broken = Call("0x1234", function_abi("CreditManager", "paused"))
    with pytest.raises(RpcError) as raised:
        await eth_call(rpc, broken)
    assert raised.value.method == "eth_call"
    assert not isinstance(raised.value, CallRevertedError)
