"""Managed files: a takeover keeps the original, a hand edit is kept aside,
and a write that fails anywhere leaves what the next run reads right."""

import errno

import pytest

from conftest import KEXEC_NEW as NEW, KEXEC_OLD as OLD, leftovers
from kexec_auto import files, managed


def test_disk_full_during_replace_managed_keeps_everything(target, tmp_path, monkeypatch):
    state = tmp_path / "state"
    managed.replace_managed(target, NEW, state)  # first takeover
    real_rename = files._rename

    def rename(src, dst):
        if str(dst) == str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(files, "_rename", rename)
    with pytest.raises(OSError):
        managed.replace_managed(target, NEW + "APPEND=x\n", state)
    assert target.read_text() == NEW
    assert (state / "kexec.written").read_text() == NEW
    assert leftovers(target.parent) == [] and leftovers(state) == []


def test_first_takeover_keeps_original(target, tmp_path):
    state = tmp_path / "state"
    result = managed.replace_managed(target, NEW, state)
    assert result.changed and result.kept_original == state / "kexec.orig"
    assert (state / "kexec.orig").read_text() == OLD
    assert target.read_text() == NEW
    # Later writes never overwrite the original.
    managed.replace_managed(target, NEW + "# more\n", state)
    assert (state / "kexec.orig").read_text() == OLD


def test_absent_original_is_recorded(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "kexec"
    managed.replace_managed(path, NEW, state)
    assert (state / "kexec.orig-absent").exists()
    assert not (state / "kexec.orig").exists()


def test_unchanged_content_is_not_rewritten(target, tmp_path):
    state = tmp_path / "state"
    managed.replace_managed(target, NEW, state)
    inode = target.stat().st_ino
    result = managed.replace_managed(target, NEW, state)
    assert not result.changed
    assert target.stat().st_ino == inode


def test_hand_edit_is_kept_aside(target, tmp_path):
    state = tmp_path / "state"
    managed.replace_managed(target, NEW, state)
    target.write_text(NEW + "# my change\n")
    assert managed.hand_edited(target, state)
    result = managed.replace_managed(target, NEW + "APPEND=y\n", state)
    assert result.kept_edit == tmp_path / "etc/kexec.kexec-auto-old"
    assert result.kept_edit.read_text() == NEW + "# my change\n"
    assert target.read_text() == NEW + "APPEND=y\n"
    assert not managed.hand_edited(target, state)
    # A second hand edit does not overwrite the first copy.
    target.write_text("# second edit\n")
    second = managed.replace_managed(target, NEW, state).kept_edit
    assert second == tmp_path / "etc/kexec.kexec-auto-old.1"
    assert result.kept_edit.read_text() == NEW + "# my change\n"
    assert second.read_text() == "# second edit\n"
