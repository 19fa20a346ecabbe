"""TFLite sparse tensors → dense numpy arrays (the work of TFLite's `DENSIFY` operator).

A sparse TFLite tensor stores only its values plus `SparsityParameters`:

- `traversal_order`: the order in which the *expanded* dimensions are walked. The expanded dimensions are
  the tensor's own `n` dimensions followed by one extra dimension per block (`k` of them), so the list is
  a permutation of `0 … n+k-1`;
- `block_map`: for each block dimension, the original dimension it splits (block-CSR);
- `dim_metadata`: one entry per traversal level, either DENSE (a size) or SPARSE_CSR (segments and
  indices: the children of the parent at position `p` are `indices[segments[p]:segments[p+1]]`).

Walking the levels outermost first yields every stored element in order, and the `values` array holds
them in exactly that order. An original coordinate is `outer * block_size + inner` for a blocked dimension.
This is our own implementation of the format as documented in TFLite's `schema.fbs` and its
`sparsity_format_converter`; it expands a whole level at a time with numpy instead of recursing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class SparsityError(ValueError):
    """The sparsity parameters are malformed or do not fit the tensor's shape or values."""


@dataclass(frozen=True)
class DenseLevel:
    """A traversal level stored in full: every coordinate `0 … size-1` is present."""

    size: int


@dataclass(frozen=True)
class CsrLevel:
    """A compressed level: for parent position `p`, the children are `indices[segments[p]:segments[p+1]]`."""

    segments: np.ndarray
    indices: np.ndarray


Level = DenseLevel | CsrLevel


def densify(
    values: np.ndarray,
    shape: Sequence[int],
    traversal_order: Sequence[int],
    block_map: Sequence[int],
    levels: Sequence[Level],
) -> np.ndarray:
    """Expand a TFLite sparse tensor into a dense array of `shape` and the dtype of `values`."""
    shape = [int(d) for d in shape]
    order = [int(d) for d in traversal_order]
    block_map = [int(d) for d in block_map]
    n, k = len(shape), len(block_map)
    if sorted(order) != list(range(n + k)):
        raise SparsityError(f"traversal_order {order} is not a permutation of 0..{n + k - 1}")
    if len(levels) != n + k:
        raise SparsityError(f"{len(levels)} dim_metadata entries for {n + k} traversal levels")
    if any(not 0 <= d < n for d in block_map) or len(set(block_map)) != k:
        raise SparsityError(f"block_map {block_map} does not name distinct dimensions of rank {n}")

    # A block dimension's size is the DENSE size at the level that walks it (TFLite supports dense
    # blocks only).
    block_size: list[int] = []
    for b in range(k):
        level = levels[order.index(n + b)]
        if not isinstance(level, DenseLevel):
            raise SparsityError(f"block dimension {b} is compressed; only dense blocks exist in TFLite")
        block_size.append(level.size)
    expanded = list(shape)  # size of each expanded dimension: blocked outer dims, then the blocks
    for b, dim in enumerate(block_map):
        if block_size[b] <= 0 or shape[dim] % block_size[b]:
            raise SparsityError(f"dimension {dim} of size {shape[dim]} is not split by block {block_size[b]}")
        expanded[dim] = shape[dim] // block_size[b]
    expanded += block_size

    # Walk level by level. `parent` is each partial coordinate's position within its level, which is
    # what indexes the next CSR level's segments; `coords[l]` is the coordinate chosen at level l.
    parent = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for depth, level in enumerate(levels):
        dim = order[depth]
        if isinstance(level, DenseLevel):
            if level.size != expanded[dim]:
                raise SparsityError(
                    f"level {depth} is dense with size {level.size}, but walks a dimension of {expanded[dim]}"
                )
            size = level.size
            coords = [c.repeat(size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), parent.size))
            parent = (parent[:, None] * size + np.arange(size, dtype=np.int64)).ravel()
        else:
            segments = np.asarray(level.segments, dtype=np.int64)
            indices = np.asarray(level.indices, dtype=np.int64)
            if parent.size and parent.max() + 1 >= segments.size:
                raise SparsityError(f"level {depth} has {segments.size} segments; parent {parent.max()}")
            starts, ends = segments[parent], segments[parent + 1]
            counts = ends - starts
            if (counts < 0).any() or (ends.size and ends.max() > indices.size):
                raise SparsityError(f"level {depth} segments do not index its {indices.size} indices")
            # Positions starts[p] … ends[p]-1 for every parent p, concatenated in parent order.
            total = int(counts.sum())
            run_start = np.repeat(np.cumsum(counts) - counts, counts)
            child = np.arange(total, dtype=np.int64) - run_start + np.repeat(starts, counts)
            coord = indices[child]
            if coord.size and (coord.min() < 0 or coord.max() >= expanded[dim]):
                raise SparsityError(f"level {depth} has an index outside 0..{expanded[dim] - 1}")
            coords = [c.repeat(counts) for c in coords]
            coords.append(coord)
            parent = child

    if parent.size != values.size:
        raise SparsityError(f"the sparsity pattern holds {parent.size} elements but {values.size} values")

    by_dim = {order[depth]: c for depth, c in enumerate(coords)}
    original = [by_dim[d] for d in range(n)]
    for b, dim in enumerate(block_map):
        original[dim] = original[dim] * block_size[b] + by_dim[n + b]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(original)] = values.ravel()
    return dense
