"""Turns revert data into readable reasons.

Nodes return a custom Solidity error as bare bytes (web3.py raises `ContractCustomError('0x…')`);
an operator needs `HealthFactorBelowOne(healthFactor=…)`, so every error in every artifact's ABI is
indexed by its 4-byte selector.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from keeper.protocol.artifacts import artifact_names, load_artifact

_ERROR_STRING = ("Error", ("message",), ("string",))
_PANIC = ("Panic", ("code",), ("uint256",))


@dataclass(frozen=True, slots=True)
class RevertReason:
    """A decoded revert: the error's name and its named arguments."""

    name: str
    args: dict[str, Any]

    def __str__(self) -> str:
        rendered = ", ".join(f"{key}={value}" for key, value in self.args.items())
        return f"{self.name}({rendered})"


def canonical_type(param: dict[str, Any]) -> str:
    """An ABI parameter's type as it appears in a signature (tuples spelled out)."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@cache
def _error_table() -> dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    table: dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    for name, arg_names, arg_types in (_ERROR_STRING, _PANIC):
        table[function_signature_to_4byte_selector(f"{name}({','.join(arg_types)})")] = (
            name,
            arg_names,
            arg_types,
        )
    for contract in artifact_names():
        for entry in load_artifact(contract).abi:
            if entry["type"] != "error":
                continue
            types = tuple(canonical_type(p) for p in entry["inputs"])
            names = tuple(p["name"] or f"arg{i}" for i, p in enumerate(entry["inputs"]))
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
            table[selector] = (entry["name"], names, types)
    return table


def decode_revert(data: bytes | str) -> RevertReason:
    """Decodes revert data against every known error; unknown data keeps its hex."""
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
    if len(raw) < 4:
        return RevertReason("EmptyRevert", {"data": "0x" + raw.hex()})
    known = _error_table().get(raw[:4])
    if known is None:
        return RevertReason("UnknownError", {"data": "0x" + raw.hex()})
    name, arg_names, arg_types = known
    values = [
        to_checksum_address(value) if kind == "address" else value
        for kind, value in zip(arg_types, decode(list(arg_types), raw[4:]), strict=True)
    ]
    return RevertReason(name, dict(zip(arg_names, values, strict=True)))
