"""The `initscope` command line: one module per command group, registered in `initscope.cli.app`."""

from initscope.cli.app import OUTPUT_FILES, BadInput, app, entry, main

__all__ = ["app", "main", "entry", "BadInput", "OUTPUT_FILES"]
