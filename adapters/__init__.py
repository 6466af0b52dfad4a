"""Fast front-ends (PyTorch, CuPy). Import the submodule you need; nothing is imported eagerly."""

if __name__ != "hyperzzw_core.adapters":
    raise ImportError(
        f"the adapters are importable only as 'hyperzzw_core.adapters', not as {__name__!r}; "
        "install the package (pip install -e .) and use: import hyperzzw_core.adapters.torch"
    )
