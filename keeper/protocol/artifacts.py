"""Compiled contract artifacts (ABI + bytecode), built by `make contracts` from contracts/src."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ABI = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: ABI
    bytecode: str
    deployed_bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name`; cached because ABIs are read on every start-up path."""
    path = resources.files("keeper.protocol") / "artifacts" / f"{name}.json"
    raw = json.loads(path.read_text())
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
    )


def artifact_names() -> list[str]:
    folder = resources.files("keeper.protocol") / "artifacts"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )
