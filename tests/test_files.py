"""``files.replace_checked`` and the writes built on it when the disk refuses: a full disk, a read-only file system,
no permission. One line naming the file, the previous file intact, no temporary file left; on a real small tmpfs
where the test may mount one (root), at the write boundary otherwise."""

import errno
import os
import pickle

import pytest
import torch
from helpers import remount, small_tmpfs

from ignite_lenet import files
from ignite_lenet.checkpoints import load_checkpoint, save_checkpoint
from ignite_lenet.files import WriteError, make_dirs, replace_checked, temporary_files, write_bytes, write_json


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES], ids=errno.errorcode.get)
def test_a_refused_write_names_the_file_and_keeps_the_previous_one(code, tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    write_json(path, {"epoch": 1})
    monkeypatch.setattr(files.os, "fsync", _raise(code))  # the last step before the rename
    with pytest.raises(WriteError) as raised:
        write_json(path, {"epoch": 2})
    assert str(raised.value) == f"cannot write {path}: {os.strerror(code)}"
    assert raised.value.errno == code and isinstance(raised.value, OSError)
    assert files.read_json(path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]  # no temporary file


def test_write_errors_travel_between_processes_and_other_errors_pass_unchanged(tmp_path):
    error = WriteError(errno.ENOSPC, "No space left on device", tmp_path / "x.pt", hint="free some space")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == f"cannot write {tmp_path / 'x.pt'}: No space left on device; free some space"

    def reads_another_file(tmp):
        open(tmp_path / "missing.onnx", "rb")

    with pytest.raises(FileNotFoundError) as raised:  # about another file: not a write error of this one
        replace_checked(tmp_path / "out.onnx", reads_another_file)
    assert not isinstance(raised.value, WriteError) and list(tmp_path.iterdir()) == []


def test_temporary_files_are_the_ones_replace_checked_makes(tmp_path):
    path = tmp_path / "best_model.pt"
    seen = []
    replace_checked(path, lambda tmp: (seen.extend(temporary_files(path)), tmp.write_bytes(b"x")))
    assert [p.name for p in seen] and seen[0].name.startswith(".best_model.") and seen[0].suffix == ".pt"
    assert temporary_files(path) == [] and path.read_bytes() == b"x"
    assert make_dirs(tmp_path / "a" / "b") == [tmp_path / "a", tmp_path / "a" / "b"]
    assert make_dirs(tmp_path / "a") == []


def _checkpoint(megabytes: float) -> dict:
    return {"model": {"weight": torch.zeros(int(megabytes * 2**18))}, "epoch": 1}  # float32: 4 bytes each


def test_a_checkpoint_on_a_full_disk_is_an_oserror_naming_it_and_the_last_one_survives(tmp_path):
    with small_tmpfs(tmp_path / "disk", "600k") as disk:
        path = disk / "training_checkpoint.pt"
        save_checkpoint(_checkpoint(0.25), path)
        with pytest.raises(RuntimeError, match="inline_container|file write failed"):
            torch.save(_checkpoint(0.5), disk / "direct.pt")  # why save_checkpoint serialises to memory first
        (disk / "direct.pt").unlink(missing_ok=True)
        with pytest.raises(WriteError) as raised:
            save_checkpoint(_checkpoint(0.5), path)
        assert str(raised.value) == f"cannot write {path}: No space left on device"
        assert sorted(p.name for p in disk.iterdir()) == ["training_checkpoint.pt"]
        assert load_checkpoint(path)["model"]["weight"].numel() == 2**16  # the last good one, intact
        remount(disk, "ro")
        with pytest.raises(WriteError, match=f"cannot write {path}: Read-only file system"):
            write_bytes(path, b"new")
        with pytest.raises(WriteError, match="cannot create directory .*/sub: Read-only file system"):
            write_bytes(disk / "sub" / "x.json", b"{}")
        assert load_checkpoint(path)["epoch"] == 1


def test_no_permission_names_the_file(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: the read-only tmpfs above is root's case
        pytest.skip("root may write a directory without write permission")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a.json'}: Permission denied"):
            write_json(tmp_path / "a.json", {})
    finally:
        tmp_path.chmod(0o700)
