"""initscope: what a neural network does to data at initialization, layer by layer."""

__version__ = "0.1.0"
