"""The transaction journal: what a restart and a reorg read back, per sender, across reopenings."""

from __future__ import annotations

from pathlib import Path

from keeper.execution.fees import Eip1559Fees
from keeper.execution.journal import TxJournal, TxStatus
from keeper.state.database import Database

SENDER = "0x00000000000000000000000000000000000000a1"
OTHER_SENDER = "0x00000000000000000000000000000000000000b2"
MANAGER = "0x00000000000000000000000000000000000000c3"
MAX_UINT256 = 2**256 - 1


def _record(journal: TxJournal, tx_hash: str, nonce: int, *, cancel: bool = False) -> None:
    journal.record_pending(
        tx_hash,
        key="liquidate:0xAccount",
        nonce=nonce,
        to=MANAGER,
        data="0xdeadbeef",
        gas_limit=300_000,
        fees=Eip1559Fees(MAX_UINT256, 10**9),
        cancel=cancel,
    )


def test_a_pending_record_survives_reopening_the_database(tmp_path: Path) -> None:
    path = tmp_path / "keeper.sqlite"
    with Database.open(path) as database:
        _record(TxJournal(database, SENDER), "0x01", 7)
    with Database.open(path) as database:
        (entry,) = TxJournal(database, SENDER).unsettled()[7]
    assert entry.tx_hash == "0x01"
    assert entry.key == "liquidate:0xAccount"
    assert (entry.to, entry.data, entry.gas_limit) == (MANAGER, "0xdeadbeef", 300_000)
    assert entry.fees == Eip1559Fees(MAX_UINT256, 10**9)
    assert entry.status is TxStatus.PENDING
    assert entry.block_number is None


def test_settling_one_hash_supersedes_the_others_of_its_nonce(tmp_path: Path) -> None:
    with Database.open(tmp_path / "keeper.sqlite") as database:
        journal = TxJournal(database, SENDER)
        _record(journal, "0x01", 3)
        _record(journal, "0x02", 3)
        _record(journal, "0x03", 3, cancel=True)
        journal.mark("0x03", TxStatus.REFUSED)
        journal.settle(3, "0x02", TxStatus.INCLUDED, 120)
        statuses = {
            entry.tx_hash: (entry.status, entry.block_number) for entry in journal.entries()
        }
        assert statuses == {
            "0x01": (TxStatus.SUPERSEDED, None),
            "0x02": (TxStatus.INCLUDED, 120),
            "0x03": (TxStatus.REFUSED, None),
        }
        assert journal.unsettled() == {}


def test_mined_after_finds_every_hash_of_a_nonce_mined_above_a_block(tmp_path: Path) -> None:
    with Database.open(tmp_path / "keeper.sqlite") as database:
        journal = TxJournal(database, SENDER)
        for nonce, block in ((0, 100), (1, 104), (2, 105)):
            _record(journal, f"0x{nonce}a", nonce)
            _record(journal, f"0x{nonce}b", nonce)
            journal.settle(nonce, f"0x{nonce}b", TxStatus.INCLUDED, block)
        above = journal.mined_after(103)
        assert sorted(above) == [1, 2]
        assert [entry.tx_hash for entry in above[1]] == ["0x1a", "0x1b"]
        journal.reopen(["0x1a", "0x1b"])
        assert sorted(journal.unsettled()) == [1]
        assert {entry.status for entry in journal.unsettled()[1]} == {TxStatus.PENDING}


def test_closing_a_nonce_ends_its_hashes(tmp_path: Path) -> None:
    with Database.open(tmp_path / "keeper.sqlite") as database:
        journal = TxJournal(database, SENDER)
        _record(journal, "0x01", 4)
        _record(journal, "0x02", 4)
        journal.close_nonce(["0x01", "0x02"], TxStatus.DROPPED)
        assert journal.unsettled() == {}
        assert {entry.status for entry in journal.entries()} == {TxStatus.DROPPED}


def test_another_senders_records_are_neither_read_nor_changed(tmp_path: Path) -> None:
    with Database.open(tmp_path / "keeper.sqlite") as database:
        ours, theirs = TxJournal(database, SENDER), TxJournal(database, OTHER_SENDER)
        _record(theirs, "0x09", 0)
        _record(ours, "0x01", 0)
        ours.settle(0, "0x01", TxStatus.INCLUDED, 5)
        assert sorted(theirs.unsettled()) == [0]
        assert [entry.tx_hash for entry in theirs.unsettled()[0]] == ["0x09"]
        assert [entry.tx_hash for entry in ours.entries()] == ["0x01"]
