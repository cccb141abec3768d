"""The devnet manifest: one JSON file telling every other tool where the running devnet is."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from keeper.devnet.anvil import DevKey
from keeper.devnet.deploy import Deployment, Roles
from keeper.devnet.seed import SeededAccount


class ManifestError(Exception):
    """The manifest is missing or unreadable; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Manifest:
    rpc_url: str
    ws_url: str
    deployment: Deployment
    roles: Roles
    accounts: tuple[SeededAccount, ...]

    def to_json(self) -> dict[str, Any]:
        roles = asdict(self.roles)
        return {
            "chain_id": self.deployment.chain_id,
            "deploy_block": self.deployment.deploy_block,
            "rpc": {"http": self.rpc_url, "ws": self.ws_url},
            "contracts": self.deployment.contracts,
            "tokens": {
                s: {"decimals": self.deployment.decimals[s]} for s in self.deployment.tokens
            },
            "markets": list(self.deployment.markets),
            "keys": roles,
            "accounts": [asdict(a) for a in self.accounts],
        }

    def write(self, path: Path) -> None:
        """Writes atomically and owner-readable only: it holds (devnet) private keys."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.chmod(partial, 0o600)
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        if not path.exists():
            raise ManifestError(
                f"no devnet manifest at {path}: start one with 'keeper devnet' "
                "(or 'make run'), or pass --manifest with the path it printed"
            )
        try:
            raw = json.loads(path.read_text())
            keys = raw["keys"]
            deployment = Deployment(
                chain_id=raw["chain_id"],
                deploy_block=raw["deploy_block"],
                contracts=raw["contracts"],
                tokens=tuple(raw["tokens"]),
                markets=tuple(raw["markets"]),
                decimals={s: t["decimals"] for s, t in raw["tokens"].items()},
            )
            roles = Roles(
                **{k: DevKey(**v) for k, v in keys.items() if k != "borrowers"},
                borrowers=tuple(DevKey(**b) for b in keys["borrowers"]),
            )
            accounts = tuple(SeededAccount(**a) for a in raw["accounts"])
            return cls(raw["rpc"]["http"], raw["rpc"]["ws"], deployment, roles, accounts)
        except (ValueError, KeyError, TypeError) as error:
            raise ManifestError(
                f"devnet manifest {path} is not valid ({error!r}); restart the devnet"
            ) from None
