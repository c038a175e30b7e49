"""The numeric core: arrays in, arrays out (numpy and scipy only; no I/O, no global state)."""
