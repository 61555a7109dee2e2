"""Student names in a gradebook: two names that display the same are the same student.

A submission's ``student`` is typed by the learner, so it can hold characters that show nothing
(zero-width spaces, joiners, Hangul fillers, variation selectors: Unicode's *default-ignorable*
code points), compatibility forms that display like plain letters (fullwidth ``Ａｄａ``, the
ligature ``ﬁ``) and direction controls that make a name display as another one (``U+202E``).
``normalise_name`` applies Unicode NFKC and removes every default-ignorable and format
character; ``name_problem`` refuses what normalising cannot make honest: direction controls,
control characters, and names with nothing visible. ``name_changes`` says what was changed, for
the grading report.

The ranges below are Unicode 15's ``Default_Ignorable_Code_Point`` (DerivedCoreProperties.txt);
Python's ``unicodedata`` does not expose that property.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 200

DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
#: Characters that change the display direction of the text around them (Unicode's Bidi_Control).
BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
#: Visible-width characters that draw nothing: read as a space.
BLANKS = frozenset([0x2800])


def _ignorable(ch: str) -> bool:
    cp = ord(ch)
    return unicodedata.category(ch) == "Cf" or any(lo <= cp <= hi for lo, hi in DEFAULT_IGNORABLE)


def _label(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}"


def normalise_name(name: str) -> str:
    """A name as the gradebook writes it: NFKC, default-ignorable and format characters removed,
    blank characters read as spaces, runs of spaces collapsed."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(" " if ord(c) in BLANKS else c for c in text if not _ignorable(c))
    return " ".join(unicodedata.normalize("NFKC", text).split())


def name_key(name: str) -> str:
    """The comparison key of a student name: normalised and case-folded (``Ada`` = ``ａｄａ`` = ``a\\u200bda``)."""
    return unicodedata.normalize("NFKC", normalise_name(name).casefold())


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a student in a gradebook (``None`` if it can)."""
    if not isinstance(name, str):
        return "student must be a non-empty string"
    bidi = sorted({c for c in name if ord(c) in BIDI_CONTROLS})
    if bidi:
        return (f"student name contains direction control(s) {', '.join(map(_label, bidi))}, which can make it "
                "display as another name")  # fmt: skip
    if any(unicodedata.category(c) == "Cc" and not c.isspace() for c in name):
        return "student name contains control characters"
    if any(c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" for c in name):
        return "student name contains a line break"
    normal = normalise_name(name)
    if not normal:
        return "student must be a non-empty string with something visible"
    if not any(unicodedata.category(c)[0] in "LNPS" for c in normal):
        return "student name has nothing visible (only marks or spaces)"
    if len(normal) > MAX_NAME_CHARS:
        return f"student name longer than {MAX_NAME_CHARS} characters"
    return None


def name_changes(name: str) -> str | None:
    """What ``normalise_name`` changed in ``name``, for the report (``None`` when only spaces were trimmed)."""
    normal = normalise_name(name)
    if normal == " ".join(name.split()):
        return None
    removed = sorted({c for c in unicodedata.normalize("NFKC", name) if _ignorable(c) or ord(c) in BLANKS})
    parts = []
    if removed:
        parts.append("removed " + ", ".join(map(_label, removed[:6])))
    compat = sorted({c for c in name if not _ignorable(c) and unicodedata.normalize("NFKC", c) != unicodedata.normalize("NFC", c)})
    if compat:
        parts.append("compatibility forms " + ", ".join(f"{_label(c)} -> {unicodedata.normalize('NFKC', c)!r}" for c in compat[:6]))
    return "; ".join(parts) or "Unicode normalisation (NFKC)"


def mixed_scripts(name: str) -> list[str]:
    """The scripts of the letters of ``name`` when it mixes Latin, Greek and Cyrillic letters, which look alike."""
    scripts = set()
    for c in name:
        if unicodedata.category(c).startswith("L"):
            word = unicodedata.name(c, "").split(" ")[0]
            if word in ("LATIN", "GREEK", "CYRILLIC"):
                scripts.add(word.capitalize())
    return sorted(scripts) if len(scripts) > 1 else []
