"""The errors the data layer raises for user mistakes: they name the file, the row and the field."""

from __future__ import annotations

from alignment.errors import UserError


class DataError(UserError, ValueError):
    """Base class of the data layer's errors (a ValueError, so generic handlers still catch it)."""


class DataLoadError(DataError):
    """A dataset could not be found or read (missing file, unknown format, Hub unreachable)."""


class DatasetTypeError(DataError, TypeError):
    """A dataset argument of a kind the trainers cannot read (a DatasetDict where one split is meant); a
    TypeError, as trl raises it."""


class DataFormatError(DataError):
    """A row of a preference dataset is malformed.

    Attributes:
        source: the file, folder or Hub name the row came from.
        row: the 1-based row number (the line number in a jsonl file; data rows after the header in a csv).
        field: the column (and message position, e.g. ``chosen[1].role``) at fault, or None.
        reason: what is wrong, in words.
    """

    def __init__(self, reason: str, source: str | None = None, row: int | None = None, field: str | None = None):
        self.reason, self.source, self.row, self.field = reason, source, row, field
        super().__init__(self._message())

    def _message(self) -> str:
        where = [str(self.source) if self.source else "<dataset>"]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.reason}"

    def located(self, source: str | None = None, row: int | None = None) -> DataFormatError:
        """The same error with the source and row filled in where they were unknown."""
        return DataFormatError(
            self.reason, self.source or source, self.row if self.row is not None else row, self.field
        )
