"""Run an attack on a release's public files and write its answer as a submission any verifier scores."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from attacks.graph import GraphResult, graph_attack
from attacks.pool import pool_attack
from attacks.public import PublicRelease
from challenge.imageset import ImageSet
from challenge.submission import write_submission

__all__ = ["write_graph", "write_pool"]


def write_graph(release: PublicRelease, out: Path, *, force: bool = False, rows: int = 4096) -> GraphResult:
    """Run the graph attack and submit, for each encryption, its group with the largest lambda.

    Parameters
    ----------
    release : PublicRelease
        The release's public files (:func:`attacks.public.open_public`).
    out : Path
        The submission folder to write (``decryption.npy``, float32, and ``metadata.json``).
    force : bool
        Replace an existing ``decryption.npy``.
    rows : int
        Encryptions read and written at a time.

    Returns
    -------
    GraphResult
        The groups, lambdas and images the attack found.
    """
    result = graph_attack(release, rows=rows)
    lo, hi = release.expected.value_range
    images = np.clip(result.images, lo, hi)
    first = result.first_choice()
    blocks = (images[first[a : a + rows]] for a in range(0, len(first), rows))
    write_submission(out, blocks, expected=release.expected, dtype="float32", force=force,
                     metadata={"team": "instahide attack graph",
                               "method": "keyless graph attack of Carlini et al. (attacks/graph.py)"})
    return result


def write_pool(release: PublicRelease, out: Path, *, pool: ImageSet, force: bool = False, rows: int = 4096,
               progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the pool attack and submit each encryption's best candidate (uint8, exact).

    Parameters
    ----------
    release : PublicRelease
        The release's public files (:func:`attacks.public.open_public`).
    out : Path
        The submission folder to write (``decryption.npy``, uint8, and ``metadata.json``).
    pool : ImageSet
        The candidate images, at the release's image shape.
    force : bool
        Replace an existing ``decryption.npy``.
    rows : int
        Encryptions and candidates processed at a time.
    progress : callable, optional
        Told how many candidates were just compared (a progress bar's ``advance``).

    Returns
    -------
    choice : numpy.ndarray
        int64 (N,): per encryption, the index of the candidate submitted.
    similarity : numpy.ndarray
        float32 (N,): that candidate's similarity to the encryption.
    """
    choice, similarity = pool_attack(release, pool, rows, progress)
    blocks = (pool.images[choice[a : a + rows]] for a in range(0, len(choice), rows))
    write_submission(out, blocks, expected=release.expected, dtype="uint8", force=force,
                     metadata={"team": "instahide attack pool",
                               "method": "best sign-invariant match in a known pool (attacks/pool.py)"})
    return choice, similarity
