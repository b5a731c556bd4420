"""e2b-matrix: compose layers into E2B template variants, build them, lock them."""

__version__ = "0.1.0"
