"""Which works make up the demo corpus, and how each style is voiced.

Every style label comes from the score corpus itself: the collection a score sits
in (Bach chorales, Palestrina masses, ...), or, for the fiddle-tune books, the
ABC ``R:`` (rhythm) header that the books' editors wrote. Nothing here guesses a
style from the music.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# General MIDI programs (0-based) used in the pools below.
PIANO, HARPSICHORD, CHURCH_ORGAN, REED_ORGAN, ACCORDION, HARMONICA = 0, 6, 19, 20, 21, 22
NYLON_GUITAR, VIOLIN, VIOLA, CELLO, HARP, STRINGS, STRINGS_2 = 24, 40, 41, 42, 46, 48, 49
CHOIR_AAHS, VOICE_OOHS, OBOE, CLARINET, FLUTE, RECORDER, PAN_FLUTE = 52, 53, 68, 71, 73, 74, 75
WHISTLE, BANJO, BAGPIPE, FIDDLE = 78, 105, 109, 110


@dataclass(frozen=True)
class Style:
    """How one style of the demo corpus is found and voiced.

    Attributes
    ----------
    name:
        The style label written to the manifest.
    polyphonic:
        Polyphonic works give a foreground (top voice) and a BGM (the other voices);
        monophonic tunes give one ``music`` track and feed method B only.
    lead_programs, accompaniment_programs:
        General MIDI programs to draw from, per work, for the top voice and for
        each other voice. Pools overlap between styles on purpose, so that timbre
        alone cannot give the style away.
    quarter_bpm:
        Tempo in quarter notes per minute when the score states none.
    language:
        eSpeak NG voice for narrating the lyrics, or ``None`` for no narration.
    min_parts:
        Scores with fewer parts are not works of this style (e.g. a piano sonata
        filed beside the quartets).
    """

    name: str
    polyphonic: bool
    lead_programs: tuple[int, ...]
    accompaniment_programs: tuple[int, ...] = ()
    quarter_bpm: float = 100.0
    language: str | None = None
    min_parts: int = 1


_DANCE_LEADS = (FIDDLE, VIOLIN, FLUTE, WHISTLE, ACCORDION, BANJO, BAGPIPE)

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            "chorale",
            True,
            (CHOIR_AAHS, CHURCH_ORGAN, FLUTE, OBOE, VIOLIN),
            (CHURCH_ORGAN, STRINGS, CHOIR_AAHS, REED_ORGAN),
            84.0,
            "de",
            4,
        ),
        Style(
            "mass",
            True,
            (VOICE_OOHS, CHOIR_AAHS, RECORDER, CHURCH_ORGAN),
            (CHOIR_AAHS, VOICE_OOHS, CHURCH_ORGAN, STRINGS),
            96.0,
            None,
            3,
        ),
        Style(
            "madrigal",
            True,
            (VOICE_OOHS, RECORDER, VIOLIN, FLUTE),
            (NYLON_GUITAR, HARPSICHORD, VOICE_OOHS, STRINGS, HARP),
            96.0,
            "it",
            4,
        ),
        Style(
            "quartet", True, (VIOLIN, FLUTE, OBOE), (STRINGS, VIOLA, CELLO, PIANO, STRINGS_2), 120.0, None, 4
        ),
        Style(
            "trecento",
            True,
            (RECORDER, VOICE_OOHS, PAN_FLUTE, VIOLIN),
            (NYLON_GUITAR, HARPSICHORD, CHURCH_ORGAN, HARP),
            90.0,
            "it",
            2,
        ),
        Style(
            "folksong", False, (ACCORDION, FLUTE, NYLON_GUITAR, PIANO, CLARINET, HARMONICA), quarter_bpm=100.0
        ),
        Style("reel", False, _DANCE_LEADS, quarter_bpm=200.0),
        Style("jig", False, _DANCE_LEADS, quarter_bpm=174.0),
        Style("hornpipe", False, _DANCE_LEADS, quarter_bpm=160.0),
        Style("slip_jig", False, _DANCE_LEADS, quarter_bpm=180.0),
        Style("strathspey", False, _DANCE_LEADS, quarter_bpm=120.0),
    )
}

# The music21 corpus folder behind each score-file style.
_SCORE_GLOBS = {
    "chorale": ("bach", "*.mxl"),
    "mass": ("palestrina", "*.krn"),
    "madrigal": ("monteverdi", "*.mxl"),
    "quartet": ("beethoven", "**/*.mxl", "haydn", "**/*.mxl", "mozart", "**/*.mxl"),
    "trecento": ("trecento", "*.xml"),
}
_DANCE_BOOKS = ("ryansMammoth", "oneills1850")
_FOLKSONG_BOOK = "essenFolksong"

# Spelling variants of the same R: header in the two fiddle-tune books. "double jig"
# is the books' name for the common 6/8 jig; it is not a different dance.
_RHYTHM_ALIASES = {"slipjig": "slip_jig", "slip_jig": "slip_jig", "double_jig": "jig"}


@dataclass(frozen=True)
class WorkRef:
    """One work of the demo corpus, before it is parsed.

    Attributes
    ----------
    work_id:
        Stable, file-system-safe id, unique in the corpus.
    style:
        Style label (see :data:`STYLES`).
    source:
        Where the score came from, as ``music21:<corpus path>[#X=<tune number>]``.
    path:
        Absolute path of the score file.
    abc_tune:
        For ABC books, the text of this one tune; ``None`` for score files.
    """

    work_id: str
    style: str
    source: str
    path: str
    abc_tune: str | None = None


def corpus_root() -> Path:
    """Folder of the score corpus bundled with music21."""
    from music21 import corpus

    return Path(corpus.__file__).parent


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def normalise_rhythm(header: str) -> str:
    """Turn an ABC ``R:`` header into a style label: ``'Slip Jig.'`` -> ``'slip_jig'``."""
    label = re.sub(r"[^a-z]+", "_", header.lower()).strip("_")
    return _RHYTHM_ALIASES.get(label, label)


def split_abc_book(text: str) -> list[tuple[int, str]]:
    """Split an ABC file into ``(X number, tune text)`` pairs, one per ``X:`` field."""
    tunes: list[tuple[int, str]] = []
    current: list[str] = []
    number = None
    for line in text.splitlines():
        if line.startswith("X:"):
            if number is not None:
                tunes.append((number, "\n".join(current)))
            digits = re.sub(r"\D", "", line[2:])
            number = int(digits) if digits else len(tunes) + 1
            current = [line]
        elif number is not None:
            current.append(line)
    if number is not None:
        tunes.append((number, "\n".join(current)))
    return tunes


def abc_header(tune: str, field: str) -> str | None:
    """The first value of an ABC header field (e.g. ``'R'``) in a tune, or ``None``."""
    match = re.search(rf"^{field}:\s*(.*)$", tune, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


@cache
def _abc_tunes(book: str) -> tuple[tuple[str, int, str], ...]:
    root = corpus_root()
    found = []
    for path in sorted((root / book).glob("*.abc")):
        for number, tune in split_abc_book(path.read_text(encoding="latin-1")):
            found.append((str(path), number, tune))
    return tuple(found)


def discover_works(style: str) -> list[WorkRef]:
    """Every candidate work of ``style`` in the music21 corpus, in a stable order.

    Raises
    ------
    KeyError
        If ``style`` is not one of :data:`STYLES`.
    """
    if style not in STYLES:
        raise KeyError(style)
    root = corpus_root()
    works: list[WorkRef] = []
    if style in _SCORE_GLOBS:
        spec = _SCORE_GLOBS[style]
        for folder, pattern in zip(spec[::2], spec[1::2], strict=True):
            for path in sorted((root / folder).glob(pattern)):
                rel = path.relative_to(root).as_posix()
                works.append(
                    WorkRef(f"{style}-{_slug(rel.rsplit('.', 1)[0])}", style, f"music21:{rel}", str(path))
                )
        return works
    books = (_FOLKSONG_BOOK,) if style == "folksong" else _DANCE_BOOKS
    for book in books:
        for path, number, tune in _abc_tunes(book):
            if style != "folksong":
                rhythm = abc_header(tune, "R")
                if rhythm is None or normalise_rhythm(rhythm) != style:
                    continue
            rel = Path(path).relative_to(root).as_posix()
            work_id = f"{style}-{_slug(rel.rsplit('.', 1)[0])}-x{number}"
            works.append(WorkRef(work_id, style, f"music21:{rel}#X={number}", path, tune))
    # A few book files repeat an X number; keep the first so ids stay unique.
    unique = {w.work_id: w for w in reversed(works)}
    return [w for w in works if unique[w.work_id] is w]
