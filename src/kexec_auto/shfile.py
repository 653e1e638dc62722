"""Reading shell assignment files (/etc/default/...) as sh would, without running them.

kexec-auto reads two such files: its own settings, which sh-based tools
(debconf's config script, an administrator's scripts) read too, and, on a
``--root`` other than /, kexec-tools' /etc/default/kexec, which must never
be run by kexec-auto.  Both must mean to kexec-auto what they mean to sh.
So this module accepts only what it can read exactly and refuses the rest
with a reason:

* blank lines, ``#`` comment lines, and lines ``[export] NAME=WORD [# comment]``;
* WORD made of plain characters (``#`` included: it starts a comment only
  at the start of a word), ``'...'``, ``"..."`` (where only ``\\$ \\` \\" \\\\``
  are escapes) and ``\\c`` outside quotes;
* not: anything sh would expand or run (``$``, a backquote, ``~`` at the
  start of the value or after an unquoted ``:``), operators (``; & | < > ( )``),
  several words, a quote left open or a backslash ending the line (both
  continue on the next line in sh), other commands.

The only split between lines is the newline, as in sh (not Unicode line
separators, not a lone carriage return).  debian/config carries the same
rules in awk; tests check all three against dash.

With ``variables`` given (kexec-tools' file), ``$NAME`` and ``${NAME}`` are
expanded from the assignments read so far, as kexec.d snippets do with
``APPEND="$APPEND ..."``.

>>> parse('# a comment\\nPIN="6.1.0-56-amd64"  # pinned\\nEXTRA_CMDLINE=a#b\\n')
[(2, 'PIN', '6.1.0-56-amd64'), (3, 'EXTRA_CMDLINE', 'a#b')]
>>> parse('APPEND="$APPEND quiet"\\n', variables={"APPEND": "ro"})
[(1, 'APPEND', 'ro quiet')]
"""

from __future__ import annotations

import re
from typing import Mapping, MutableMapping, Optional

_HEAD = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=")
_PLAIN = re.compile(r"[^ \t'\"\\$`;&|<>()~:]+")
_IN_DOUBLE = re.compile(r'[^"\\$`]+')
_VARIABLE = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")
_DOUBLE_ESCAPES = '$`"\\'
_OPERATORS = ";&|<>()"


class ShSyntaxError(ValueError):
    """A line that cannot be read without running it; ``line`` is its number."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def assigned_name(line: str) -> Optional[str]:
    """The NAME that ``line`` assigns (``NAME=...``), None for any other line.

    >>> assigned_name("  export PIN=x"), assigned_name("# PIN=x")
    ('PIN', None)
    """
    match = _HEAD.match(line)
    return match.group(1) if match else None


def _expand(line: str, i: int, variables: Optional[Mapping[str, str]]) -> tuple[str, int]:
    if variables is not None:
        match = _VARIABLE.match(line, i)
        if match:
            return variables.get(match.group(1) or match.group(2), ""), match.end()
    what = "command substitution" if line[i] == "`" or line.startswith("$(", i) else "an expansion"
    raise ValueError(f"{line[i:i + 2]!r} starts {what}: kexec-auto does not expand; quote it with '...'")


def parse_line(line: str, variables: Optional[Mapping[str, str]] = None) -> Optional[tuple[str, str]]:
    """``(NAME, value)`` for an assignment line, None for a blank or comment
    line; ValueError with the reason for anything else."""
    stripped = line.lstrip(" \t")
    if not stripped or stripped.startswith("#"):
        return None
    if "\0" in line:
        raise ValueError("a NUL byte")
    head = _HEAD.match(line)
    if not head:
        raise ValueError("not a NAME=value assignment (kexec-auto reads this file, it does not run it)")
    out: list[str] = []
    start = i = head.end()
    n = len(line)
    after_colon = False
    while i < n:
        c = line[i]
        if c in " \t":
            break
        if c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("a '...' quote is not closed on this line")
            out.append(line[i + 1:end])
            i, after_colon = end + 1, False
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError('a "..." quote is not closed on this line')
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("a backslash ends the line (sh continues it on the next one)")
                    if line[i + 1] in _DOUBLE_ESCAPES:
                        out.append(line[i + 1])
                        i += 2
                    else:
                        out.append("\\")
                        i += 1
                elif c in "$`":
                    text, i = _expand(line, i, variables)
                    out.append(text)
                else:
                    run = _IN_DOUBLE.match(line, i)
                    assert run is not None  # c is none of the characters it stops at
                    out.append(run.group())
                    i = run.end()
            after_colon = False
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("a backslash ends the line (sh continues it on the next one)")
            out.append(line[i + 1])
            i, after_colon = i + 2, False
        elif c in "$`":
            text, i = _expand(line, i, variables)
            out.append(text)
            after_colon = False
        elif c in _OPERATORS:
            raise ValueError(f"{c!r} outside quotes: quote the value")
        elif c == "~":
            if i == start or after_colon:
                raise ValueError("'~' outside quotes at the start of the value or after ':' is expanded by sh")
            out.append(c)
            i, after_colon = i + 1, False
        elif c == ":":
            out.append(c)
            i, after_colon = i + 1, True
        else:
            run = _PLAIN.match(line, i)
            assert run is not None  # c is none of the characters it stops at
            out.append(run.group())
            i, after_colon = run.end(), False
    rest = line[i:].lstrip(" \t")
    if rest and not rest.startswith("#"):
        raise ValueError("several words: quote the value")
    return head.group(1), "".join(out)


def parse(text: str, variables: Optional[MutableMapping[str, str]] = None) -> list[tuple[int, str, str]]:
    """Every assignment in ``text``, as ``(line number, NAME, value)``;
    ShSyntaxError for the first line that cannot be read exactly.  With
    ``variables``, each assignment is also stored there for later lines."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        try:
            assignment = parse_line(line, variables)
        except ValueError as error:
            raise ShSyntaxError(number, str(error)) from None
        if assignment:
            found.append((number, *assignment))
            if variables is not None:
                variables[assignment[0]] = assignment[1]
    return found
