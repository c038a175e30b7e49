"""Development tools of the initscope repository (not part of the installed package)."""
