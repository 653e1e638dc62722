import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexec_auto.render import RenderError, render_default_kexec, shell_quote


def source(tmp_path, content: str, var: str) -> str:
    path = tmp_path / "kexec"
    path.write_text(content, encoding="utf-8")
    return subprocess.run(
        ["sh", "-c", f'. "$1"; printf %s "${var}"', "sh", str(path)],
        capture_output=True, check=True,
    ).stdout.decode("utf-8")


def render(append="root=/dev/vda ro", image="/boot/vmlinuz-6.1.0-56-amd64", initrd="/boot/initrd.img-6.1.0-56-amd64"):
    return render_default_kexec("6.1.0-56-amd64", image, initrd, append, "newest amd64 kernel")


def test_layout_matches_what_kexec_tools_reads():
    text = render()
    assert text.startswith("# /etc/default/kexec - maintained by kexec-auto")
    assert "/etc/default/kexec-auto" in text
    assignments = [line for line in text.splitlines() if not line.startswith("#")]
    assert assignments == [
        "LOAD_KEXEC=true",
        "KERNEL_IMAGE=/boot/vmlinuz-6.1.0-56-amd64",
        "INITRD=/boot/initrd.img-6.1.0-56-amd64",
        "APPEND='root=/dev/vda ro'",
        "USE_GRUB_CONFIG=false",
    ]


def test_without_load_kexec_for_trixie_kexec_tools():
    text = render_default_kexec("6.1.0-56-amd64", "/boot/vmlinuz-x", "/boot/initrd.img-x", "a", "r",
                                with_load_kexec=False)
    assignments = [line for line in text.splitlines() if not line.startswith("#")]
    assert [line.split("=")[0] for line in assignments] == ["KERNEL_IMAGE", "INITRD", "APPEND", "USE_GRUB_CONFIG"]
    assert "LOAD_KEXEC" not in text


def test_no_kernel_means_load_kexec_false():
    text = render_default_kexec(None, "", "", "", "no selectable kernel")
    assert "LOAD_KEXEC=false" in text.splitlines()
    assert "# Selected kernel: none (no selectable kernel)" in text


unsafe_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"$`\\ !*?[]{}();&|<>~#=%\t")),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(unsafe_text)
def test_sourcing_yields_exactly_the_value(tmp_path_factory, value):
    tmp_path = tmp_path_factory.mktemp("q")
    assert source(tmp_path, render(append=value), "APPEND") == value
    assert source(tmp_path, f"X={shell_quote(value)}\n", "X") == value


@settings(max_examples=50, deadline=None)
@given(unsafe_text)
def test_every_variable_is_quoted(tmp_path_factory, value):
    tmp_path = tmp_path_factory.mktemp("q")
    text = render(append="a", image=f"/boot/{value}", initrd=f"/boot/i{value}")
    assert source(tmp_path, text, "KERNEL_IMAGE") == f"/boot/{value}"
    assert source(tmp_path, text, "INITRD") == f"/boot/i{value}"


@pytest.mark.parametrize("bad, label", [("a\nb", "a newline"), ("a\0b", "a NUL byte"), ("a\rb", "a carriage return")])
def test_unrepresentable_values_are_rejected_by_name(bad, label):
    with pytest.raises(RenderError) as error:
        render(append=bad)
    assert str(error.value).startswith(f"APPEND contains {label}")
