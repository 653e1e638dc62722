import pytest

from kexec_auto.config import Config, ConfigError, parse_config, parse_value, set_values


def test_defaults_when_empty():
    config, warnings = parse_config([])
    assert config == Config()
    assert (config.enabled, config.flavour, config.pin, config.require_initrd) == (True, "running", "", True)
    assert warnings == []


def test_all_keys_quoted_and_unquoted():
    config, warnings = parse_config(
        [
            "# comment",
            "",
            "ENABLED=false",
            "FLAVOUR='cloud-amd64'",
            'PIN="6.1.0-56-cloud-amd64"',
            'EXCLUDE="*-rt-* 6.1.0-9-*"',
            "CMDLINE='root=/dev/vda ro quiet'",
            'EXTRA_CMDLINE="nokaslr  mitigations=off"  # trailing comment',
            "export REQUIRE_INITRD=false",
        ]
    )
    assert warnings == []
    assert config == Config(
        enabled=False,
        flavour="cloud-amd64",
        pin="6.1.0-56-cloud-amd64",
        exclude=("*-rt-*", "6.1.0-9-*"),
        cmdline="root=/dev/vda ro quiet",
        extra_cmdline="nokaslr  mitigations=off",
        require_initrd=False,
    )


def test_unknown_key_warns_and_a_line_that_is_no_assignment_is_an_error():
    config, warnings = parse_config(["FLAVOUR=any", "COLOUR=blue"], source="/x/cfg")
    assert config.flavour == "any"
    assert warnings == ["/x/cfg:2: ignoring unknown setting COLOUR"]
    # sh would run it: kexec-auto cannot know what it means.
    with pytest.raises(ConfigError) as error:
        parse_config(["FLAVOUR=any", "this is not an assignment"], source="/x/cfg")
    assert str(error.value) == ("/x/cfg:2: cannot parse 'this is not an assignment': not a NAME=value "
                                "assignment (kexec-auto reads this file, it does not run it)")


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("ENABLED=yes", "ENABLED: invalid value 'yes'"),
        ("FLAVOUR=Cloud_AMD64", "FLAVOUR: invalid value 'Cloud_AMD64'"),
        ("PIN=../../etc", "PIN: invalid value '../../etc'"),
        ("REQUIRE_INITRD=1", "REQUIRE_INITRD: invalid value '1'"),
        ("CMDLINE=two words", "CMDLINE: cannot parse"),
        ("CMDLINE='unterminated", "CMDLINE: cannot parse"),
    ],
)
def test_bad_values_are_errors_naming_file_line_and_value(line, fragment):
    with pytest.raises(ConfigError) as error:
        parse_config(["# first", line], source="/etc/default/kexec-auto")
    message = str(error.value)
    assert message.startswith("/etc/default/kexec-auto:2: ")
    assert fragment in message
    assert "\n" not in message


def test_parse_value_is_sh_assignment_and_refuses_expansions():
    assert parse_value("'a b'") == "a b"
    assert parse_value('"x\\"y"') == 'x"y'
    assert parse_value('"x\\$y\\z"') == "x$y\\z"  # sh's escapes inside double quotes
    assert parse_value("a#b") == "a#b"  # '#' starts a comment only at the start of a word
    assert parse_value("") == ""
    assert parse_value("'$HOME'") == "$HOME"
    for raw in ("$HOME", '"$HOME"', "`id`", "~", "a:~/x", "a;b", "'open"):
        with pytest.raises(ValueError):
            parse_value(raw)


def test_set_values_keeps_comments_unknown_lines_and_order():
    lines = ["# my notes", "FLAVOUR=any", "SOMETHING=else", "PIN=", "PIN=dup"]
    assert set_values(lines, {"PIN": "6.1.0-56-amd64", "EXTRA_CMDLINE": "a b"}) == [
        "# my notes",
        "FLAVOUR=any",
        "SOMETHING=else",
        "PIN=6.1.0-56-amd64",
        "EXTRA_CMDLINE='a b'",
    ]


def test_set_values_round_trips_through_parse():
    text = "quote ' and \" and $dollar `tick` \\ back"
    lines = set_values([], {"EXTRA_CMDLINE": text, "CMDLINE": ""})
    config, _ = parse_config(lines)
    assert config.extra_cmdline == text
    assert config.cmdline == ""


def test_set_values_rejects_invalid_value():
    with pytest.raises(ConfigError, match="ENABLED: invalid value 'maybe'"):
        set_values(["ENABLED=true"], {"ENABLED": "maybe"})
    with pytest.raises(ConfigError, match="newlines"):
        set_values([], {"EXTRA_CMDLINE": "a\nb"})
