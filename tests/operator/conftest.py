"""One devnet for every operator-command test: anvil, the protocol and 20 seeded accounts.

The commands only read the chain or send through it, so the tests share it; a test that changes
it (a price crash, a pause, a liquidation, a jump in time) takes `fresh`, which snapshots the
chain first and reverts it afterwards, so every test starts from the same seeded accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keeper.devnet.controls import reverted_after
from keeper.devnet.keeper_config import keeper_config_toml
from keeper.devnet.network import running_devnet
from tests.operator.helpers import Operator


@pytest.fixture(scope="package")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with running_devnet(accounts=20, seed=1) as net:
        config = tmp_path_factory.mktemp("operator") / "keeper.toml"
        config.write_text(keeper_config_toml(net.manifest()))
        yield Operator(net, config)


@pytest.fixture
def fresh(operator: Operator) -> Iterator[Operator]:
    with reverted_after(operator.net.w3):
        yield operator
