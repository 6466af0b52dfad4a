"""hyperzzw: the HyperZ·Z·W operator and the Terminator network (Zhang, arXiv 2401.17948).

* ``hyperzzw_core.reference``: the NumPy/SciPy ground truth, forward and VJPs.
* ``hyperzzw_core.adapters``: fast front-ends (PyTorch, CuPy), tested against the reference.
"""

__version__ = "0.1.0"
