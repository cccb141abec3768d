"""Loading the keeper's key from a keystore, the environment or a key file, and never showing it."""

from __future__ import annotations

import copy
import json
import pickle
import traceback
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from eth_account import Account
from eth_keys.backends import get_backend
from eth_keys.backends.coincurve import CoinCurveECCBackend
from eth_utils.crypto import keccak

from keeper.execution.signer import (
    Signer,
    SignerError,
    signer_from_env,
    signer_from_file,
    signer_from_keystore,
)

# A throwaway test key (never funded anywhere); the tests look for any 16-digit run of it.
KEY_HEX = "9c4b7f3e1a2d6b8c0e5f7a9d3c1b2e4f6a8d0c2e4b6f8a1c3e5d7b9f0a2c4e6d"
ADDRESS = Account.from_key(bytes.fromhex(KEY_HEX)).address
PASSWORD = "correct horse battery staple"
VARIABLE = "ASGARD_KEEPER_KEY"

TX: dict[str, Any] = {
    "chainId": 31337,
    "nonce": 0,
    "to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "value": 1,
    "gas": 21_000,
    "maxFeePerGas": 2 * 10**9,
    "maxPriorityFeePerGas": 10**9,
    "type": 2,
}


def assert_no_key(text: str) -> None:
    lowered = text.lower()
    for start in range(len(KEY_HEX) - 16 + 1):
        assert KEY_HEX[start : start + 16] not in lowered, text


def assert_error_hides_key(error: SignerError) -> None:
    """Neither the message nor a printed traceback (which would show a chained exception) leaks."""
    assert_no_key(str(error))
    assert_no_key("".join(traceback.format_exception(error)))


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    path = tmp_path / "keystore.json"
    # pbkdf2 with one iteration keeps the test fast; real keystores use scrypt's default cost.
    encrypted = Account.encrypt(bytes.fromhex(KEY_HEX), PASSWORD, kdf="pbkdf2", iterations=1)
    path.write_text(json.dumps(encrypted))
    return path


def password_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "password.txt"
    path.write_bytes(content.encode())
    return path


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""], ids=["lf", "crlf", "none"])
def test_keystore_round_trip(keystore: Path, tmp_path: Path, ending: str) -> None:
    signer = signer_from_keystore(keystore, password_file(tmp_path, PASSWORD + ending))
    assert signer.address == ADDRESS

    signed = signer.sign_transaction(MappingProxyType(TX))
    assert signed.raw_transaction.startswith("0x02")  # an EIP-1559 envelope
    assert signed.hash == "0x" + keccak(hexstr=signed.raw_transaction).hex()
    assert Account.recover_transaction(signed.raw_transaction) == ADDRESS


def test_wrong_password_names_both_files(keystore: Path, tmp_path: Path) -> None:
    password = password_file(tmp_path, "not the password\n")
    with pytest.raises(SignerError, match="wrong password") as caught:
        signer_from_keystore(keystore, password)
    assert str(keystore) in str(caught.value)
    assert str(password) in str(caught.value)
    assert "not the password" not in str(caught.value)


def test_missing_files_are_named(keystore: Path, tmp_path: Path) -> None:
    password = password_file(tmp_path, PASSWORD)
    missing = tmp_path / "absent.json"
    with pytest.raises(SignerError, match=r"cannot read keystore file .*absent\.json"):
        signer_from_keystore(missing, password)
    with pytest.raises(SignerError, match=r"cannot read password file .*absent\.json"):
        signer_from_keystore(keystore, missing)
    with pytest.raises(SignerError, match="cannot read keystore file"):
        signer_from_keystore(tmp_path, password)  # a directory


@pytest.mark.parametrize(
    ("content", "match"),
    [
        # the plain key saved where the keystore belongs
        (("0x" + KEY_HEX).encode(), r"not an encrypted JSON keystore \(it is not JSON\)"),
        (json.dumps([KEY_HEX]).encode(), r"\(it is not a JSON object\)"),
        (json.dumps({"version": 4, "crypto": {}}).encode(), r"\(it is not version 3"),
        (json.dumps({"version": 3}).encode(), r"\(its fields are missing"),
        (json.dumps({"version": 3, "crypto": {"kdf": KEY_HEX}}).encode(), r"fields are missing"),
        (b"\xff\xfe" + KEY_HEX.encode(), r"keystore file .* is not UTF-8 text"),
    ],
    ids=["plain-key", "list", "v4", "no-crypto", "key-as-kdf", "binary"],
)
def test_malformed_keystore_says_so_without_echoing_it(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(content)
    with pytest.raises(SignerError, match=match) as caught:
        signer_from_keystore(path, password_file(tmp_path, PASSWORD))
    assert_error_hides_key(caught.value)


def test_keystore_with_invalid_parameters(keystore: Path, tmp_path: Path) -> None:
    encrypted = json.loads(keystore.read_text())
    encrypted["crypto"]["kdfparams"]["c"] = "many"
    keystore.write_text(json.dumps(encrypted))
    with pytest.raises(SignerError, match="not an encrypted JSON keystore"):
        signer_from_keystore(keystore, password_file(tmp_path, PASSWORD))


def test_non_utf8_password_file(keystore: Path, tmp_path: Path) -> None:
    path = tmp_path / "password.txt"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SignerError, match=r"password file .* is not UTF-8"):
        signer_from_keystore(keystore, path)


@pytest.mark.parametrize(
    "value",
    ["0x" + KEY_HEX, KEY_HEX, "0X" + KEY_HEX.upper(), f"  {KEY_HEX}\n"],
    ids=["0x", "bare", "upper", "padded"],
)
def test_env_key_in_any_spelling(value: str) -> None:
    assert signer_from_env(VARIABLE, {VARIABLE: value}).address == ADDRESS


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({}, "is not set"),
        ({VARIABLE: ""}, "is empty"),
        ({VARIABLE: " 0x "}, "is empty"),
        ({VARIABLE: "0x" + KEY_HEX[:-1]}, "has 63 hex digits, a key has 64"),
        ({VARIABLE: ADDRESS}, "has 40 hex digits"),
        ({VARIABLE: KEY_HEX[:-1] + "g"}, "characters other than hex digits"),
        ({VARIABLE: "0" * 64}, "not a valid secp256k1 private key"),
    ],
    ids=["unset", "empty", "bare-0x", "short", "address", "non-hex", "zero"],
)
def test_env_errors_name_the_variable(environ: dict[str, str], match: str) -> None:
    with pytest.raises(SignerError, match=match) as caught:
        signer_from_env(VARIABLE, environ)
    assert VARIABLE in str(caught.value)


@pytest.mark.parametrize(
    "content",
    ["0x" + KEY_HEX + "\n", KEY_HEX, f"  0X{KEY_HEX.upper()}\r\n"],
    ids=["0x-newline", "bare", "upper-padded"],
)
def test_key_file_in_any_spelling(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    assert signer_from_file(path).address == ADDRESS


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty: write the keeper's private key in it"),
        (b"0x\n", "is empty"),
        (("0x" + KEY_HEX[:-1]).encode(), "has 63 hex digits, a key has 64"),
        (ADDRESS.encode(), "has 40 hex digits"),
        (b"0x" + b"00" * 32, "not a valid secp256k1 private key"),
        (json.dumps({"version": 3, "kdf": KEY_HEX}).encode(), "characters other than hex"),
        (b"\xff\xfe" + KEY_HEX.encode(), "is not UTF-8 text"),
    ],
    ids=["empty", "bare-0x", "short", "address", "zero", "keystore-json", "binary"],
)
def test_key_file_errors_name_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(SignerError, match=match) as caught:
        signer_from_file(path)
    assert f"private key file {path}" in str(caught.value)
    assert_error_hides_key(caught.value)


def test_unreadable_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SignerError, match=r"cannot read private key file .*absent: No such file"):
        signer_from_file(tmp_path / "absent")
    with pytest.raises(SignerError, match=r"cannot read private key file .*: Is a directory"):
        signer_from_file(tmp_path)


NEAR_KEYS = [
    KEY_HEX + "0",
    "0x" + KEY_HEX + "0",
    KEY_HEX[:-1],
    KEY_HEX[:-1] + "g",
    f'"0x{KEY_HEX}"',
    f"0x{KEY_HEX} # keeper",
    KEY_HEX + KEY_HEX,
    KEY_HEX.upper() + "Z",
    "ff" * 32,  # above the curve order
]


def test_no_error_or_representation_reveals_the_key(keystore: Path, tmp_path: Path) -> None:
    errors: list[SignerError] = []
    for value in NEAR_KEYS:
        with pytest.raises(SignerError) as caught:
            signer_from_env(VARIABLE, {VARIABLE: value})
        errors.append(caught.value)
    # The key used as the password, and near-keys in place of the keystore.
    with pytest.raises(SignerError) as caught:
        signer_from_keystore(keystore, password_file(tmp_path, "0x" + KEY_HEX))
    errors.append(caught.value)
    for index, value in enumerate(NEAR_KEYS):
        path = tmp_path / f"near-{index}.json"
        path.write_text(value)
        with pytest.raises(SignerError) as caught:
            signer_from_keystore(path, password_file(tmp_path, PASSWORD))
        errors.append(caught.value)
        with pytest.raises(SignerError) as caught:
            signer_from_file(path)
        errors.append(caught.value)
    for error in errors:
        assert_error_hides_key(error)

    signer = signer_from_env(VARIABLE, {VARIABLE: KEY_HEX})
    assert repr(signer) == str(signer) == f"Signer(address={ADDRESS})"
    assert_no_key(repr(signer))
    assert_no_key(f"{signer!s} {signer!r} {[signer]}")


def test_signer_cannot_be_pickled_copied_inspected_or_changed() -> None:
    signer = signer_from_env(VARIABLE, {VARIABLE: KEY_HEX})
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(signer)
    with pytest.raises(TypeError):
        vars(signer)
    with pytest.raises(AttributeError, match="immutable"):
        signer.address = "0x0000000000000000000000000000000000000000"
    assert isinstance(signer, Signer)


def test_signatures_come_from_libsecp256k1_not_the_pure_python_fallback() -> None:
    """eth_keys falls back to pure Python without coincurve, silently, at seven times the cost of
    each signature on the path from a crash block to the first liquidation sent."""
    assert isinstance(get_backend(), CoinCurveECCBackend)
