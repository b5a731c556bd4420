"""The shipped layers, one module each. Projects may add their own in layers/*.toml."""

from e2b_matrix.layers import base, extra_tools, fuse, nexus

SHIPPED = {m.LAYER.name: m.LAYER for m in (base, fuse, nexus, extra_tools)}
