"""Deploys the reference protocol onto a devnet and records where everything is."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from keeper.devnet.anvil import DevKey
from keeper.devnet.spec import MarketSpec, ProtocolSpec
from keeper.devnet.tx import connect, contract_at, deploy, send
from keeper.protocol.artifacts import load_artifact
from keeper.protocol.calls import MULTICALL3_ADDRESS

_LIQUIDATOR_FUNDS_USD = 50_000_000
_DEX_RESERVES_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Roles:
    """Who does what on the devnet, drawn from anvil's funded keys in a fixed order."""

    deployer: DevKey
    treasury: DevKey
    keeper: DevKey
    emergency_liquidator: DevKey
    competitor: DevKey
    borrowers: tuple[DevKey, ...]

    @classmethod
    def from_keys(cls, keys: list[DevKey]) -> Roles:
        if len(keys) < 6:
            raise ValueError(f"the devnet needs at least 6 funded keys, anvil gave {len(keys)}")
        return cls(keys[0], keys[1], keys[2], keys[3], keys[4], tuple(keys[5:]))


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the protocol lives: every contract by name (`CreditManager.USDC`, `WETH`, ...)."""

    chain_id: int
    deploy_block: int
    contracts: dict[str, str]
    tokens: tuple[str, ...]
    markets: tuple[str, ...]
    decimals: dict[str, int]

    def address(self, name: str) -> str:
        try:
            return self.contracts[name]
        except KeyError:
            raise KeyError(f"no contract named {name!r}; known: {sorted(self.contracts)}") from None

    def artifact_of(self, name: str) -> str:
        if name in self.tokens:
            return "TestToken"
        return name.split(".", 1)[0]

    def contract(self, w3: Web3, name: str) -> Contract:
        return contract_at(w3, self.artifact_of(name), self.address(name))

    def symbol_of(self, address: str) -> str:
        wanted = address.lower()
        return next(s for s in self.tokens if self.contracts[s].lower() == wanted)


def deploy_protocol(rpc_url: str, spec: ProtocolSpec, roles: Roles) -> Deployment:
    """Deploys tokens, feeds, oracle, DEX adapter, the keeper's BatchLiquidator and one pool +
    CreditManager per market (the emergency liquidator role and the BatchLiquidator are each
    market's emergency liquidators), funds pools, DEX reserves and liquidators, and places
    Multicall3 at its canonical address."""
    w3 = connect(rpc_url)
    admin = roles.deployer.address
    deploy_block = w3.eth.block_number + 1
    contracts: dict[str, str] = {}

    for token in spec.tokens:
        contracts[token.symbol] = deploy(
            w3, "TestToken", admin, f"Test {token.symbol}", token.symbol, token.decimals
        )
        contracts[f"PriceFeed.{token.symbol}"] = deploy(
            w3, "PriceFeed", admin, token.feed_decimals, f"{token.symbol} / USD", token.price_answer
        )
    contracts["PriceOracle"] = deploy(w3, "PriceOracle", admin)
    oracle = contract_at(w3, "PriceOracle", contracts["PriceOracle"])
    for token in spec.tokens:
        feed = contracts[f"PriceFeed.{token.symbol}"]
        send(
            w3,
            oracle.functions.setPriceFeed(contracts[token.symbol], feed, spec.staleness_period_s),
            admin,
        )
    contracts["OracleSwapAdapter"] = deploy(
        w3, "OracleSwapAdapter", admin, contracts["PriceOracle"], spec.dex_fee_bps
    )
    for market in spec.markets:
        _deploy_market(w3, contracts, spec, market, roles)
    # The keeper's own (deployed last, so every other address stays what it always was): many
    # accounts per transaction, for the keeper only, even while a market is paused.
    contracts["BatchLiquidator"] = deploy(w3, "BatchLiquidator", admin, roles.keeper.address)
    for market in spec.markets:
        manager = contract_at(w3, "CreditManager", contracts[f"CreditManager.{market.underlying}"])
        send(
            w3, manager.functions.setEmergencyLiquidator(contracts["BatchLiquidator"], True), admin
        )

    for token in spec.tokens:
        minted = contract_at(w3, "TestToken", contracts[token.symbol])
        usd_unit = 10**token.decimals * 10**token.feed_decimals // token.price_answer
        send(
            w3,
            minted.functions.mint(contracts["OracleSwapAdapter"], _DEX_RESERVES_USD * usd_unit),
            admin,
        )
        if any(m.underlying == token.symbol for m in spec.markets):
            for liquidator in (roles.keeper, roles.emergency_liquidator, roles.competitor):
                amount = _LIQUIDATOR_FUNDS_USD * usd_unit
                send(w3, minted.functions.mint(liquidator.address, amount), admin)

    w3.provider.make_request(
        RPCEndpoint("anvil_setCode"),
        [MULTICALL3_ADDRESS, load_artifact("Multicall3").deployed_bytecode],
    )
    contracts["Multicall3"] = MULTICALL3_ADDRESS
    return Deployment(
        chain_id=w3.eth.chain_id,
        deploy_block=deploy_block,
        contracts=contracts,
        tokens=tuple(t.symbol for t in spec.tokens),
        markets=tuple(m.underlying for m in spec.markets),
        decimals={t.symbol: t.decimals for t in spec.tokens},
    )


def _deploy_market(
    w3: Web3, contracts: dict[str, str], spec: ProtocolSpec, market: MarketSpec, roles: Roles
) -> None:
    """Deploys and configures one pool + CreditManager, adding their addresses to `contracts`."""
    admin = roles.deployer.address
    underlying = market.underlying
    thresholds = market.liquidation_thresholds_bps
    pool_address = deploy(
        w3, "LendingPool", admin, contracts[underlying], market.rate_per_second_ray
    )
    manager_address = deploy(
        w3,
        "CreditManager",
        admin,
        pool_address,
        contracts["PriceOracle"],
        roles.treasury.address,
        thresholds[underlying],
        spec.fee_interest_bps,
        spec.liquidation_fee_bps,
        spec.liquidation_premium_bps,
    )
    contracts[f"LendingPool.{underlying}"] = pool_address
    contracts[f"CreditManager.{underlying}"] = manager_address
    pool = contract_at(w3, "LendingPool", pool_address)
    manager = contract_at(w3, "CreditManager", manager_address)
    send(w3, pool.functions.setCreditManager(manager_address), admin)
    for symbol, threshold in thresholds.items():
        if symbol != underlying:
            send(w3, manager.functions.addCollateralToken(contracts[symbol], threshold), admin)
    send(w3, manager.functions.setAdapter(contracts["OracleSwapAdapter"], True), admin)
    send(
        w3,
        manager.functions.setEmergencyLiquidator(roles.emergency_liquidator.address, True),
        admin,
    )
    token = contract_at(w3, "TestToken", contracts[underlying])
    liquidity = market.pool_liquidity * 10 ** spec.token(underlying).decimals
    send(w3, token.functions.mint(admin, liquidity), admin)
    send(w3, token.functions.approve(pool_address, liquidity), admin)
    send(w3, pool.functions.deposit(liquidity), admin)
