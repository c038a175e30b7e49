"""The run report's flags table: where each initializer first goes wrong, in plain words.

The rules, thresholds and words are `initscope.study.flags`, shared with
`initscope run`'s summary and the torch adapter's diagnosis.
"""

from __future__ import annotations

from initscope.study.flags import FLAG_COLUMNS, NEVER, NOT_MEASURED, flags_table

__all__ = ["flags_table", "FLAG_COLUMNS", "NEVER", "NOT_MEASURED"]
