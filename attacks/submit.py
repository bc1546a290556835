"""Run an attack on a release's public files and write its answer as a submission any verifier scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.graph import graph_attack
from attacks.pool import pool_attack
from attacks.public import PublicRelease
from challenge.imageset import ImageSet
from challenge.submission import write_submission

__all__ = ["write_graph", "write_pool"]


def write_graph(release: PublicRelease, out: Path, force: bool = False, rows: int = 4096):
    """Run the graph attack and submit, for each encryption, its group with the largest lambda."""
    result = graph_attack(release, rows=rows)
    lo, hi = release.expected.value_range
    images = np.clip(result.images, lo, hi)
    first = result.first_choice()
    blocks = (images[first[a : a + rows]] for a in range(0, len(first), rows))
    write_submission(out, blocks, expected=release.expected, dtype="float32",
                     metadata={"team": "instahide attack graph",
                               "method": "keyless graph attack of Carlini et al. (attacks/graph.py)"},
                     force=force)
    return result


def write_pool(release: PublicRelease, pool: ImageSet, out: Path, force: bool = False, rows: int = 4096, progress=None):
    """Run the pool attack and submit each encryption's best candidate (uint8, exact)."""
    choice, similarity = pool_attack(release, pool, rows, progress)
    blocks = (pool.images[choice[a : a + rows]] for a in range(0, len(choice), rows))
    write_submission(out, blocks, expected=release.expected, dtype="uint8",
                     metadata={"team": "instahide attack pool",
                               "method": "best sign-invariant match in a known pool (attacks/pool.py)"},
                     force=force)
    return choice, similarity
