"""CSV for people: every CSV the project writes goes through here, so no cell is a formula.

A spreadsheet runs a cell that begins with `=`, `+`, `-` or `@` (and, in some programs, a
tab or carriage return before them) as a formula: a file name such as
`=HYPERLINK("http://...")` would become a link, `=cmd|' /C calc'!A0` a command. Such text
cells get a leading single quote, which spreadsheets hide and read as "this is text" (OWASP's
advice on CSV injection). A cell that already begins with a quote gets one more, so the
escaping can be undone exactly: `unescape_cell` gives back what was written, for the files
the project reads again (run tables, `predict --resume`). Numbers are never touched, whether
numbers or text that reads as one: a column of negative distances stays numeric.
"""

import csv
import re

import pandas

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def escape_cell(value):
    """`value` as a spreadsheet shows it: text that would start a formula is quoted."""
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        return value
    if value.startswith((*FORMULA_PREFIXES, QUOTE)):
        return QUOTE + value
    return value


def unescape_cell(value):
    """The value `escape_cell` was given: the one quote it added is removed."""
    if isinstance(value, str) and value.startswith(QUOTE):
        return value[len(QUOTE) :]
    return value


def escape_frame(frame: pandas.DataFrame) -> pandas.DataFrame:
    """A copy of `frame` with every text column escaped; number columns are left alone."""
    escaped = frame.copy()
    for column in _text_columns(frame):
        escaped[column] = frame[column].map(escape_cell, na_action="ignore")
    return escaped


def to_csv(frame: pandas.DataFrame, path=None, **options):
    """`frame.to_csv` with text cells escaped: a file at `path`, or the text when None."""
    return escape_frame(frame).to_csv(path, **options)


def read_csv(path, **options) -> pandas.DataFrame:
    """`pandas.read_csv` of a file `to_csv` wrote, with the text cells as they were given."""
    frame = pandas.read_csv(path, **options)
    for column in _text_columns(frame):
        frame[column] = frame[column].map(unescape_cell, na_action="ignore")
    return frame


def writer(handle) -> "EscapingWriter":
    """A `csv.writer` over `handle` whose rows are escaped cell by cell."""
    return EscapingWriter(csv.writer(handle))


class EscapingWriter:
    def __init__(self, rows_writer):
        self.rows_writer = rows_writer

    def writerow(self, row) -> None:
        self.rows_writer.writerow([escape_cell(cell) for cell in row])


def _text_columns(frame: pandas.DataFrame) -> list:
    return [
        column
        for column in frame.columns
        if pandas.api.types.is_object_dtype(frame[column])
        or pandas.api.types.is_string_dtype(frame[column])
    ]
