"""Preference data: loading, format detection, validation, tokenization and collation."""

from alignment.data.collator import PreferenceCollator, SFTCollator, anchor_columns, pad_sequences
from alignment.data.errors import DataError, DataFormatError, DataLoadError
from alignment.data.formats import (
    CONVERSATIONAL,
    PREFERENCE,
    SFT,
    STANDARD,
    UNPAIRED,
    detect_format,
    extract_prompt,
    validate_row,
)
from alignment.data.loading import (
    ValidationReport,
    iter_source_rows,
    load_preference_data,
    load_preference_dataset,
    validate_dataset,
    validate_rows,
)
from alignment.data.tokenize import TokenizeReport, tokenize_preference_dataset, tokenize_row, truncate_row

__all__ = [
    "CONVERSATIONAL",
    "PREFERENCE",
    "SFT",
    "STANDARD",
    "UNPAIRED",
    "DataError",
    "DataFormatError",
    "DataLoadError",
    "PreferenceCollator",
    "SFTCollator",
    "TokenizeReport",
    "ValidationReport",
    "anchor_columns",
    "detect_format",
    "extract_prompt",
    "iter_source_rows",
    "load_preference_data",
    "load_preference_dataset",
    "pad_sequences",
    "tokenize_preference_dataset",
    "tokenize_row",
    "truncate_row",
    "validate_dataset",
    "validate_row",
    "validate_rows",
]
