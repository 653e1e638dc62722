from kexec_auto.config import Config
from kexec_auto.policy import Kernel, select_kernel


def k(release, initrd=True, problem=""):
    return Kernel(release, f"/boot/vmlinuz-{release}", f"/boot/initrd.img-{release}" if initrd else None, problem)


RUNNING = "6.1.0-50-cloud-amd64"
MIXED = [
    k("6.1.0-9-cloud-amd64"),
    k("6.1.0-10-cloud-amd64"),
    k("6.12.117+deb12-amd64"),
    k("6.1.0-56-rt-amd64"),
    k("6.12.111+deb12-cloud-amd64"),
]


def selected(kernels, running=RUNNING, **settings):
    return select_kernel(kernels, Config(**settings), running)


def test_newest_of_running_flavour_by_default():
    selection = selected(MIXED)
    assert selection.kernel.release == "6.12.111+deb12-cloud-amd64"
    assert selection.reason == "newest kernel of the running flavour, cloud-amd64"
    assert selection.warnings == () and selection.errors == ()


def test_verdicts_list_every_kernel_oldest_first_with_reasons():
    verdicts = selected(MIXED).verdicts
    assert [v.kernel.release for v in verdicts] == [
        "6.1.0-9-cloud-amd64",
        "6.1.0-10-cloud-amd64",
        "6.1.0-56-rt-amd64",
        "6.12.111+deb12-cloud-amd64",
        "6.12.117+deb12-amd64",
    ]
    other = {v.kernel.release: v for v in verdicts}["6.12.117+deb12-amd64"]
    assert not other.selectable and other.why_not == "flavour amd64, not cloud-amd64"


def test_numeric_ordering_not_string_ordering():
    selection = selected([k("6.1.0-9-amd64"), k("6.1.0-10-amd64")], running="6.1.0-1-amd64")
    assert selection.kernel.release == "6.1.0-10-amd64"
    assert selected([k("3.13-1-amd64"), k("3.2.0-4-amd64")], running="3.2.0-4-amd64").kernel.release == "3.13-1-amd64"


def test_any_flavour():
    selection = selected(MIXED, flavour="any")
    assert selection.kernel.release == "6.12.117+deb12-amd64"
    assert all(v.selectable for v in selection.verdicts)


def test_any_flavour_tie_prefers_running_flavour():
    kernels = [k("6.1.0-56-amd64"), k("6.1.0-56-cloud-amd64"), k("6.1.0-56-rt-amd64")]
    assert selected(kernels, flavour="any").kernel.release == "6.1.0-56-cloud-amd64"


def test_named_flavour():
    assert selected(MIXED, flavour="rt-amd64").kernel.release == "6.1.0-56-rt-amd64"


def test_running_flavour_missing_falls_back_to_any_with_warning():
    selection = selected(MIXED, running="6.1.0-50-arm64")
    assert selection.kernel.release == "6.12.117+deb12-amd64"
    assert selection.warnings == ("no selectable arm64 kernel is installed; using the newest kernel of any flavour",)
    assert "since no arm64 kernel is installed" in selection.reason


def test_pin_selects_even_an_older_or_other_flavour_kernel():
    selection = selected(MIXED, pin="6.1.0-56-rt-amd64")
    assert selection.kernel.release == "6.1.0-56-rt-amd64"
    assert selection.reason == "pinned by PIN=6.1.0-56-rt-amd64"
    assert selection.errors == ()


def test_pin_not_installed_is_an_error_naming_it_and_newest_is_used():
    selection = selected(MIXED, pin="6.1.0-99-cloud-amd64")
    assert selection.kernel.release == "6.12.111+deb12-cloud-amd64"
    assert selection.errors == (
        "PIN=6.1.0-99-cloud-amd64: kernel 6.1.0-99-cloud-amd64 is not installed; "
        "using 6.12.111+deb12-cloud-amd64 instead",
    )


def test_pin_of_unusable_kernel_is_an_error_with_the_reason():
    selection = selected([k("6.1.0-9-cloud-amd64"), k("6.1.0-10-cloud-amd64", initrd=False)],
                         pin="6.1.0-10-cloud-amd64")
    assert selection.kernel.release == "6.1.0-9-cloud-amd64"
    assert "cannot be used: no initrd" in selection.errors[0]


def test_exclude_globs():
    selection = selected(MIXED, exclude=("6.12.*",))
    assert selection.kernel.release == "6.1.0-10-cloud-amd64"
    excluded = {v.kernel.release: v.why_not for v in selection.verdicts}
    assert excluded["6.12.111+deb12-cloud-amd64"] == "excluded by EXCLUDE pattern '6.12.*'"


def test_kernel_without_initrd_needs_require_initrd_false():
    kernels = [k("6.1.0-9-cloud-amd64"), k("6.1.0-10-cloud-amd64", initrd=False)]
    assert selected(kernels).kernel.release == "6.1.0-9-cloud-amd64"
    assert selected(kernels, require_initrd=False).kernel.release == "6.1.0-10-cloud-amd64"


def test_broken_images_never_selected():
    kernels = [k("6.1.0-9-cloud-amd64"), k("6.1.0-10-cloud-amd64", problem="empty file")]
    selection = selected(kernels)
    assert selection.kernel.release == "6.1.0-9-cloud-amd64"
    assert selection.verdicts[1].why_not == "empty file"


def test_nothing_selectable():
    selection = selected([k("6.1.0-10-cloud-amd64", initrd=False)])
    assert selection.kernel is None
    assert selection.reason == "no selectable kernel"
    assert selection.warnings == ()
    assert selected([]).kernel is None
