"""The keeper's signing key, loaded once and never shown.

The key comes from an encrypted JSON keystore (with its password in a separate file, as container
secrets are mounted), from an environment variable, or from a file holding it in hex. Every
failure names the file or variable, says what is wrong and how to fix it, and never includes the
key, the password or the text it was read from; the underlying exception is dropped
(`from None`) because its message or traceback could.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from eth_account import Account
from eth_account.signers.local import LocalAccount

_PRIVATE_KEY_HEX_DIGITS = 64
_WRONG_PASSWORD_ERROR = "MAC mismatch"  # how eth-keyfile reports a key that does not decrypt


class SignerError(Exception):
    """The signing key could not be loaded; the message never contains key material."""


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    raw_transaction: str  # 0x hex, ready for eth_sendRawTransaction
    hash: str  # 0x hex, as eth-account names it


class Signer:
    """Signs with the keeper's key, which it holds privately: it shows as its address only, and
    refuses to be pickled or copied."""

    __slots__ = ("_account", "address")

    address: str
    _account: LocalAccount

    def __init__(self, account: LocalAccount) -> None:
        object.__setattr__(self, "_account", account)
        object.__setattr__(self, "address", account.address)

    def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTransaction:
        signed = self._account.sign_transaction(dict(tx))
        return SignedTransaction(signed.raw_transaction.to_0x_hex(), signed.hash.to_0x_hex())

    def __repr__(self) -> str:
        return f"Signer(address={self.address})"

    __str__ = __repr__

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Signer is immutable; cannot set {name}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Signer is immutable; cannot delete {name}")

    def __reduce__(self) -> NoReturn:
        # Pickling (and copy) would serialise the key: a signer stays in the process that loaded it.
        raise TypeError("a Signer holds a private key and cannot be pickled or copied")


def signer_from_keystore(keystore_path: Path, password_path: Path) -> Signer:
    """Decrypts an encrypted JSON keystore (geth/clef/`cast wallet` format); the password file's
    trailing newline is not part of the password."""
    keystore_text = _read_text(keystore_path, "keystore file")
    password = _read_text(password_path, "password file").rstrip("\r\n")
    try:
        keystore = json.loads(keystore_text)
    except json.JSONDecodeError:
        _malformed_keystore(keystore_path, "it is not JSON")
    if not isinstance(keystore, dict):
        _malformed_keystore(keystore_path, "it is not a JSON object")
    if keystore.get("version") != 3:
        _malformed_keystore(keystore_path, "it is not version 3, the format of account keys")
    try:
        key = Account.decrypt(keystore, password)
    except ValueError as error:
        if str(error) == _WRONG_PASSWORD_ERROR:
            raise SignerError(
                f"wrong password for keystore {keystore_path}: the password in {password_path} "
                "does not decrypt it; put the keystore's password in that file (a trailing "
                "newline is ignored)"
            ) from None
        _malformed_keystore(keystore_path, "its encryption parameters are invalid")
    except (KeyError, TypeError, NotImplementedError):
        _malformed_keystore(keystore_path, "its fields are missing or of an unsupported kind")
    return Signer(Account.from_key(key))


def signer_from_env(variable: str, environ: Mapping[str, str] = os.environ) -> Signer:
    """A key given as 64 hex digits, with or without 0x, in the environment variable `variable`."""
    value = environ.get(variable)
    if value is None:
        raise SignerError(
            f"environment variable {variable} is not set: set it to the keeper's private key "
            "(64 hex digits, optionally 0x-prefixed) or use a keystore file"
        )
    return _signer_from_hex(
        value, f"environment variable {variable}", "set it to the keeper's private key"
    )


def signer_from_file(path: Path) -> Signer:
    """A key given as 64 hex digits, with or without 0x, in the file `path` (a mounted secret);
    surrounding whitespace such as the trailing newline is ignored."""
    return _signer_from_hex(
        _read_text(path, "private key file"),
        f"private key file {path}",
        "write the keeper's private key in it",
    )


def _signer_from_hex(value: str, source: str, fill_in: str) -> Signer:
    """`value` as a key; errors name `source` (a variable or file), say to `fill_in` when it is
    empty, and never show `value`."""
    digits = re.sub(r"^0[xX]", "", value.strip())
    if not digits:
        raise SignerError(f"{source} is empty: {fill_in} (64 hex digits, optionally 0x-prefixed)")
    if not all(c in string.hexdigits for c in digits):
        raise SignerError(
            f"{source} is not a private key: it contains characters other than hex digits "
            "(after an optional 0x); check for quotes or a pasted address"
        )
    if len(digits) != _PRIVATE_KEY_HEX_DIGITS:
        raise SignerError(
            f"{source} is not a private key: it has {len(digits)} hex digits, a key has "
            f"{_PRIVATE_KEY_HEX_DIGITS} (an address has 40)"
        )
    try:
        account = Account.from_key(bytes.fromhex(digits))
    except ValueError:
        raise SignerError(
            f"{source} is not a valid secp256k1 private key (zero or not below the curve "
            "order); generate a new key"
        ) from None
    return Signer(account)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SignerError(f"{what} {path} is not UTF-8 text") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SignerError(
            f"cannot read {what} {path}: {reason}; check the path and that the keeper may read it"
        ) from None


def _malformed_keystore(path: Path, reason: str) -> NoReturn:
    raise SignerError(
        f"keystore file {path} is not an encrypted JSON keystore ({reason}); export the key "
        "as a version 3 keystore, e.g. with 'cast wallet import' or geth"
    ) from None
