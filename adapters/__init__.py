"""Fast front-ends (PyTorch, CuPy). Import the submodule you need; nothing is imported eagerly."""
