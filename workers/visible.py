"""One rule for every byte a sender controls that reaches a terminal or a log line.

Job ids, prompts, producer names, dead-letter fields, error texts and callback paths come
from outside. Printed raw, an ``ESC`` starts a terminal escape sequence (clear the screen,
set the window title, an OSC-8 hyperlink, a fake green "all clear" line), a C1 byte does
the same on terminals that honour 8-bit controls, a newline forges a log line, and a bidi
override reverses what follows. :func:`visible` makes each such character visible as a
Python-style escape (``\\x1b``, ``\\x9b``, ``\\u202e``) and leaves everything else alone,
so ordinary text (accents, CJK, emoji) is shown as it is.

Where it is applied: every data cell and message of the ``nbq`` commands (through
:func:`workers.cli.common.shown`, which also keeps rich markup in data from being
interpreted) and every value of every log line (:mod:`workers.logs`, both renderers).
"""

from __future__ import annotations

import re
from typing import Final

#: What is escaped: C0 controls and DEL, C1 controls, lone surrogates (they cannot even be
#: encoded for a terminal), the line/paragraph separators, and the bidi marks, embeddings,
#: overrides and isolates (the "Trojan Source" characters).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
#: The same without newline and tab (tracebacks keep their lines).
_UNSAFE_KEEP_LINES: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029"
    "\u202a-\u202e\u2066-\u2069]"
)
# Every character of both patterns is one ``str.isprintable`` refuses (categories Cc, Cs,
# Cf, Zl, Zp): a printable text has none of them, which ``isprintable`` says several times
# faster than a regex search (every value of every log line passes here). A test holds
# the patterns to that.


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object, *, keep_lines: bool = False) -> str:
    """``value`` as text in which no character can act on a terminal or split a line.

    >>> visible("job\\x1b]0;PWNED\\x07 \\u202eabc")
    'job\\\\x1b]0;PWNED\\\\x07 \\\\u202eabc'

    ``keep_lines`` keeps newline and tab (for tracebacks); everything else is escaped.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # nearly every text: no character of either pattern (below)
        return text
    pattern = _UNSAFE_KEEP_LINES if keep_lines else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def is_visible(text: str) -> bool:
    """True when :func:`visible` would leave ``text`` unchanged."""
    return text.isprintable() or _UNSAFE.search(text) is None
