"""Brings a whole devnet up: anvil, the reference protocol, seeded accounts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from web3 import Web3
from web3.types import RPCEndpoint

from keeper.devnet.anvil import AnvilNode
from keeper.devnet.deploy import Deployment, Roles, deploy_protocol
from keeper.devnet.manifest import Manifest
from keeper.devnet.seed import SeededAccount, seed_accounts
from keeper.devnet.spec import DEFAULT_SPEC, ProtocolSpec
from keeper.devnet.tx import connect


@dataclass(frozen=True, slots=True)
class Devnet:
    node: AnvilNode
    w3: Web3
    spec: ProtocolSpec
    deployment: Deployment
    roles: Roles
    accounts: tuple[SeededAccount, ...]

    def manifest(self) -> Manifest:
        return Manifest(
            self.node.rpc_url, self.node.ws_url, self.deployment, self.roles, self.accounts
        )


@contextmanager
def running_devnet(
    *,
    accounts: int = 0,
    seed: int = 1,
    block_time: int | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    spec: ProtocolSpec = DEFAULT_SPEC,
    dump_state: Path | None = None,
) -> Iterator[Devnet]:
    """A devnet for the duration of the `with` block; anvil is stopped on the way out.

    Deployment and seeding run with instant mining; `block_time` then switches anvil to a block
    every that many seconds, as a real chain would produce them. anvil listens on `host`
    (0.0.0.0 to serve other containers); the devnet itself talks to it over loopback. With
    `dump_state`, `restart_anvil` can stop anvil and bring it back with its state.
    """
    with AnvilNode(port=port, host=host, dump_state=dump_state) as node:
        roles = Roles.from_keys(node.keys())
        deployment = deploy_protocol(node.rpc_url, spec, roles)
        w3 = connect(node.rpc_url)
        seeded = seed_accounts(w3, deployment, spec, roles, count=accounts, seed=seed)
        if block_time is not None:
            w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [block_time])
        yield Devnet(node, w3, spec, deployment, roles, tuple(seeded))


def restart_anvil(net: Devnet, *, block_time: int | None = None) -> None:
    """anvil stops (writing its state) and comes back on the same port with it, as a node
    restarted by its operator; `block_time` sets interval mining again, since anvil does not
    keep it. The devnet must have been started with `dump_state`."""
    net.node.restart()
    if block_time is not None:
        net.w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [block_time])
