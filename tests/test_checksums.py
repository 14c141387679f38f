"""Checksum records (evae/checksums.py): recorded when written, verified when read, safe against a kill at any
step of a write, shared by concurrent writers, and recordable after the fact."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest
import torch

from evae import checksums
from evae.checksums import RECORD, DamagedFileError, MissingRecordError
from evae.io import remove_stale_temporaries


def entry(folder, name):
    return json.loads((folder / RECORD).read_text())["files"][name]


def test_written_files_are_recorded_and_read_back(tmp_path):
    checksums.write_json(tmp_path / "r.json", {"nll": 80.5})
    checksums.torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    checksums.save_npz(tmp_path / "a.npz", x=np.arange(4.0))
    assert checksums.read_json(tmp_path / "r.json") == {"nll": 80.5}
    assert torch.equal(checksums.torch_load(tmp_path / "w.pt")["w"], torch.arange(3))
    assert np.array_equal(checksums.load_npz(tmp_path / "a.npz")["x"], np.arange(4.0))
    e = entry(tmp_path, "r.json")
    assert e == {**checksums.digest((tmp_path / "r.json").read_bytes()), "recorded": "when written"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checksums.lock", "a.npz", RECORD, "r.json", "w.pt"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "unrecorded"])
def test_a_damaged_file_is_named_with_what_was_recorded_and_found(tmp_path, damage):
    path = tmp_path / "r.json"
    checksums.write_json(path, {"value": list(range(50))})
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
        match = r"r\.json is damaged: its SHA-256 is .* was recorded when it was written; it has changed since"
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
        match = rf"r\.json is damaged: it is truncated: {len(data) // 2} bytes where {len(data)} were recorded when it was written"
    elif damage == "delete":
        path.unlink()
        match = r"r\.json is missing: .*checksums\.json records it"
    else:
        (tmp_path / "other.json").write_text("{}")
        path = tmp_path / "other.json"
        match = r"other\.json is not in its folder's checksum record .*record-checksums"
    with pytest.raises(DamagedFileError, match=match) as err:
        checksums.read_json(path, advice="Do this.")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert damage == "unrecorded" or str(err.value).endswith("Do this.")


def test_a_folder_without_a_record_names_the_command_that_records_it(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(MissingRecordError, match=rf"python -m evae record-checksums {tmp_path}"):
        checksums.read_json(tmp_path / "old.json")
    with pytest.raises(FileNotFoundError):  # never written: not a damage
        checksums.read_json(tmp_path / "never.json")


def test_an_unreadable_record_is_itself_named(tmp_path):
    checksums.write_text(tmp_path / "a.txt", "a")
    (tmp_path / RECORD).write_text('{"format": 1, "files": {"a.t')
    with pytest.raises(DamagedFileError, match=rf"the checksum record {tmp_path / RECORD} is unreadable"):
        checksums.read_text(tmp_path / "a.txt")


def test_a_kill_between_any_two_steps_of_a_write_leaves_a_readable_file(tmp_path, monkeypatch):
    path = tmp_path / "m.csv"
    checksums.write_text(path, "old\n")
    editing = checksums._editing

    def killed_at(step):
        calls = {"n": 0}

        def edit(folder):
            calls["n"] += 1
            if calls["n"] == step:
                raise KeyboardInterrupt  # what a kill does to the rest of the write
            return editing(folder)

        return edit

    # killed after the new hash was marked pending, before the rename: the old file stays, and matches
    replace = os.replace

    def replace_only_the_record(src, dst):
        if os.path.basename(dst) != RECORD:
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_only_the_record)
    with pytest.raises(KeyboardInterrupt):
        checksums.write_text(path, "new\n")
    monkeypatch.undo()
    assert checksums.read_text(path) == "old\n" and "pending" in entry(tmp_path, "m.csv")
    # killed after the rename, before the pending hash was made the file's: the new file matches its pending hash
    monkeypatch.setattr(checksums, "_editing", killed_at(2))
    with pytest.raises(KeyboardInterrupt):
        checksums.write_text(path, "newer\n")
    monkeypatch.undo()
    assert checksums.read_text(path) == "newer\n"
    checksums.write_text(path, "newest\n")  # the next write completes the record
    assert checksums.read_text(path) == "newest\n" and "pending" not in entry(tmp_path, "m.csv")
    path.write_text("newer\n")  # an earlier version is not accepted once a later one is recorded
    with pytest.raises(DamagedFileError):
        checksums.read_text(path)


def _write_many(folder, prefix, n):
    for i in range(n):
        checksums.write_text(folder / f"{prefix}{i}.txt", f"{prefix} {i}\n")


def test_concurrent_writers_into_one_folder_lose_no_entry(tmp_path):
    """As the nll and knn jobs of one run do in their evaluation folder (here 4 writers x 25 files)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(tmp_path, p, 25)) for p in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    files = json.loads((tmp_path / RECORD).read_text())["files"]
    assert len(files) == 100
    for name in files:
        assert checksums.read_text(tmp_path / name) == f"{name[0]} {name[1:-4]}\n"


def test_recording_after_the_fact_marks_entries_and_verifies_recorded_ones(tmp_path):
    (tmp_path / "legacy.json").write_text('{"nll": 1}')
    (tmp_path / ".hidden").write_text("x")
    checksums.write_text(tmp_path / "new.txt", "new")
    done = checksums.record_existing(tmp_path)
    assert done == {"recorded": ["legacy.json"], "verified": ["new.txt"]}
    legacy = entry(tmp_path, "legacy.json")
    assert legacy["recorded"] == "after the fact" and legacy["utc"]
    assert entry(tmp_path, "new.txt")["recorded"] == "when written"
    assert checksums.read_json(tmp_path / "legacy.json") == {"nll": 1}
    assert ".hidden" not in json.loads((tmp_path / RECORD).read_text())["files"]
    assert checksums.record_existing(tmp_path) == {"recorded": [], "verified": ["legacy.json", "new.txt"]}
    (tmp_path / "legacy.json").write_text('{"nll": 2}')  # changed since: recording again refuses to bless it
    with pytest.raises(DamagedFileError, match="legacy.json is damaged.*nothing was recorded"):
        checksums.record_existing(tmp_path)
    with pytest.raises(DamagedFileError, match="recorded after the fact"):
        checksums.read_json(tmp_path / "legacy.json")


def test_a_file_recorded_after_the_fact_but_already_unreadable_is_reported(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"PK\x03\x04 not a whole zip archive")
    checksums.record_existing(tmp_path)
    with pytest.raises(DamagedFileError, match=r"best\.pt matches its checksum record but cannot be read as a torch"):
        checksums.torch_load(tmp_path / "best.pt")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    names = [".checkpoint.pt.k2j3h4.tmp", ".metrics.csv.abc.tmp", ".checksums.lock", "best.pt", "notes.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_stale_temporaries(tmp_path) == [".checkpoint.pt.k2j3h4.tmp", ".metrics.csv.abc.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".checksums.lock", "best.pt", "notes.tmp"]
