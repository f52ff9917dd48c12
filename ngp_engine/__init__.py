"""ngp_engine: instant-ngp style neural fields (hash grid + tiny MLP) in PyTorch.

Runs as a command-line tool (`python -m ngp_engine`) and, for the Blender add-on, as a
separate process. Importing this package imports nothing heavy.
"""
__version__ = "0.1.0"
