"""A command that fails part-way changes nothing it owns, or leaves what
the next run reads right: every write, rename and removal of an update and
of a disable fails in turn, then the command runs again without faults and
must end exactly where a run without any fault ends.  Every failure is one
line naming the file it could not write."""
from __future__ import annotations

import errno
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import FakeRoot
from kexec_auto import cli, files, managed

OLD = "6.1.0-56-cloud-amd64"
NEW = "6.12.117+deb12-cloud-amd64"
ORIGINAL = "# kexec-tools' own\nLOAD_KEXEC=false\n"


class Faults:
    """Counts the file operations of a run; makes the ``fail_at``-th fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int = 0):
        self.count, self.fail_at = 0, fail_at
        for name in ("_write_all", "_rename", "_unlink"):
            monkeypatch.setattr(files, name, self._wrap(getattr(files, name)))
        monkeypatch.setattr(files.tempfile, "mkstemp", self._wrap(tempfile.mkstemp))

    def _wrap(self, function):
        def operation(*args, **kwargs):
            self.count += 1
            if self.count == self.fail_at:
                # as the system call would: naming its files, where it has some
                paths = [str(a) for a in args if isinstance(a, (str, Path))]
                names = paths[:1] + [None] + paths[1:2] if paths else []
                raise OSError(errno.ENOSPC, "No space left on device", *names)
            return function(*args, **kwargs)
        return operation


def prepare(root: FakeRoot, scenario: str) -> None:
    root.add_kernel(OLD)
    root.write("/etc/default/kexec", ORIGINAL)
    if scenario in ("update", "edited", "disable", "disable-edited"):
        assert cli.main(["update", "--root", str(root)]) == 0
        root.add_kernel(NEW)
    if scenario in ("edited", "disable-edited"):
        root.write("/etc/default/kexec", root.read("/etc/default/kexec") + "# my note\n")
    if scenario.startswith("disable"):
        root.config("ENABLED=false\n")


def outcome(root: FakeRoot) -> dict[str, object]:
    """What a run leaves that matters: the file, the copies kept aside, the
    original kept, and whether the file reads as edited by hand."""
    etc = root.file("/etc/default")
    state = root.file(files.STATE_DIR)
    return {
        "kexec": root.file("/etc/default/kexec").read_bytes() if root.exists("/etc/default/kexec") else None,
        "kept": {p.name: p.read_bytes() for p in sorted(etc.glob("kexec.kexec-auto-old*"))},
        "records": sorted(p.name for p in state.glob("kexec.*")) if state.exists() else [],
        "edited": managed.hand_edited(root.file("/etc/default/kexec"), state),
    }


SCENARIOS = ["takeover", "update", "edited", "disable", "disable-edited"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_fault_anywhere_in_an_update_is_read_right_by_the_next_run(tmp_path, monkeypatch, capsys, scenario):
    clean = FakeRoot(tmp_path / "clean")
    prepare(clean, scenario)
    with monkeypatch.context() as patch:
        counter = Faults(patch)
        assert cli.main(["update", "--root", str(clean)]) == 0
    operations = counter.count
    assert operations > 2, operations
    expected = outcome(clean)
    capsys.readouterr()
    for fail_at in range(1, operations + 1):
        root = FakeRoot(tmp_path / f"{scenario}-{fail_at}")
        prepare(root, scenario)
        capsys.readouterr()
        with monkeypatch.context() as patch:
            Faults(patch, fail_at)
            status = cli.main(["update", "--root", str(root)])
        err = capsys.readouterr().err
        if status != 0:
            assert re.fullmatch(r"kexec-auto: error: /\S+: No space left on device.*\n", err.splitlines(True)[-1]), \
                (fail_at, err)
        assert "unexpected" not in err, (fail_at, err)
        assert not outcome(root)["edited"] or scenario.endswith("edited"), (fail_at, "a write taken for an edit")
        assert cli.main(["update", "--root", str(root)]) == 0
        capsys.readouterr()
        assert outcome(root) == expected, (fail_at, outcome(root), expected)
        shutil.rmtree(root.path)


def test_the_error_of_a_full_disk_names_the_file_and_what_was_kept(tmp_path, monkeypatch, capsys):
    root = FakeRoot(tmp_path / "root")
    prepare(root, "update")
    with monkeypatch.context() as patch:
        Faults(patch, 1)
        assert cli.main(["update", "--root", str(root)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    pending = root.file("/var/lib/kexec-auto/kexec.pending")
    assert err == (f"kexec-auto: error: {pending}: No space left on device; it is left as it was; "
                   f"{root.file('/etc/default/kexec')} is left as it was")
