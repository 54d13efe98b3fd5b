"""Private Numba kernels, one module per op family; no argument checks here."""
