"""Atomic writes: failures at every step leave the old file whole."""

import errno
import os
import stat

import pytest

from kexec_auto import files

OLD = "LOAD_KEXEC=false\n"
NEW = "LOAD_KEXEC=true\nKERNEL_IMAGE=/boot/vmlinuz-x\n"


@pytest.fixture
def target(tmp_path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc/kexec"
    path.write_text(OLD)
    return path


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(target, tmp_path):
    target.chmod(0o600)
    files.write_atomic(target, NEW)
    assert target.read_text() == NEW
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(target.parent) == []
    files.write_atomic(tmp_path / "new", NEW)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644


def _fail(exception):
    def failing(*args, **kwargs):
        raise exception

    return failing


@pytest.mark.parametrize(
    "step, exception",
    [
        ("write", OSError(errno.ENOSPC, "No space left on device")),
        ("fsync", OSError(errno.EIO, "Input/output error")),
        ("fchmod", OSError(errno.EPERM, "Operation not permitted")),
        ("rename", KeyboardInterrupt()),  # a crash just before the rename
        ("mkstemp", OSError(errno.EROFS, "Read-only file system")),
    ],
)
def test_failure_at_each_step_keeps_old_file(target, monkeypatch, step, exception):
    if step == "write":
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            handle.write = _fail(exception)
            return handle

        monkeypatch.setattr(files.os, "fdopen", fdopen)
    elif step == "mkstemp":
        monkeypatch.setattr(files.tempfile, "mkstemp", _fail(exception))
    else:
        monkeypatch.setattr(files.os, step, _fail(exception))
    with pytest.raises(type(exception)):
        files.write_atomic(target, NEW)
    assert target.read_text() == OLD
    assert leftovers(target.parent) == []


def test_disk_full_during_replace_managed_keeps_everything(target, tmp_path, monkeypatch):
    state = tmp_path / "state"
    files.replace_managed(target, NEW, state)  # first takeover
    real_rename = os.rename

    def rename(src, dst):
        if str(dst) == str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError):
        files.replace_managed(target, NEW + "APPEND=x\n", state)
    assert target.read_text() == NEW
    assert (state / "kexec.written").read_text() == NEW
    assert leftovers(target.parent) == [] and leftovers(state) == []


def test_first_takeover_keeps_original(target, tmp_path):
    state = tmp_path / "state"
    result = files.replace_managed(target, NEW, state)
    assert result.changed and result.kept_original == state / "kexec.orig"
    assert (state / "kexec.orig").read_text() == OLD
    assert target.read_text() == NEW
    # Later writes never overwrite the original.
    files.replace_managed(target, NEW + "# more\n", state)
    assert (state / "kexec.orig").read_text() == OLD


def test_absent_original_is_recorded(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "kexec"
    files.replace_managed(path, NEW, state)
    assert (state / "kexec.orig-absent").exists()
    assert not (state / "kexec.orig").exists()


def test_unchanged_content_is_not_rewritten(target, tmp_path):
    state = tmp_path / "state"
    files.replace_managed(target, NEW, state)
    inode = target.stat().st_ino
    result = files.replace_managed(target, NEW, state)
    assert not result.changed
    assert target.stat().st_ino == inode


def test_hand_edit_is_kept_aside(target, tmp_path):
    state = tmp_path / "state"
    files.replace_managed(target, NEW, state)
    target.write_text(NEW + "# my change\n")
    assert files.hand_edited(target, state)
    result = files.replace_managed(target, NEW + "APPEND=y\n", state)
    assert result.kept_edit == tmp_path / "etc/kexec.kexec-auto-old"
    assert result.kept_edit.read_text() == NEW + "# my change\n"
    assert target.read_text() == NEW + "APPEND=y\n"
    assert not files.hand_edited(target, state)
    # A second hand edit does not overwrite the first copy.
    target.write_text("# second edit\n")
    second = files.replace_managed(target, NEW, state).kept_edit
    assert second == tmp_path / "etc/kexec.kexec-auto-old.1"
    assert result.kept_edit.read_text() == NEW + "# my change\n"
    assert second.read_text() == "# second edit\n"
