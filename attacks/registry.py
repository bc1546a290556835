"""The attacks the tool runs, one row each: ``instahide attack NAME`` and ``instahide strength`` are
built from :data:`ATTACKS`, so a new attack is one module and one row (CONTRIBUTING.md, "Adding an
attack").
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from attacks.graph import GraphResult, pair_accuracy
from attacks.public import PublicRelease
from attacks.submit import write_graph, write_pool
from challenge import format as fmt
from challenge.imageset import ImageSet
from challenge.progress import Progress

__all__ = ["ATTACKS", "Attack"]


@dataclass(frozen=True)
class Attack:
    """One attack as the command line offers it and the strength report names it.

    ``run(release, out, *, rows, force)`` (plus ``pool=``, the candidate images, when ``uses_pool``)
    reads the :class:`attacks.public.PublicRelease`, writes its submission into ``out`` and returns
    (the fields ``attack NAME --json`` adds, its answer).  ``measure(answer, store)``, if given, is
    what ``strength`` adds to the attack's row from the answer and the key store; the attack itself
    never sees the keys.
    """

    name: str
    _: KW_ONLY
    help: str  # one line, in ``instahide attack --help``
    description: str  # ``instahide attack NAME --help``
    attacker: str  # who could run it, as the strength verdict names them
    has: str  # what that attacker has
    run: Callable[..., tuple[dict, Any]]
    uses_pool: bool = False  # takes --pool, a data set the attacker can obtain; strength runs it only with one
    measure: Callable[[Any, fmt.KeyStore], dict] | None = None


def _pool(release: PublicRelease, out: Path, *, pool: ImageSet, rows: int, force: bool) -> tuple[dict, Any]:
    with Progress("pool", len(pool), unit="candidates") as bar:
        choice, similarity = write_pool(release, out, pool=pool, force=force, rows=rows, progress=bar.advance)
    return {"median_similarity": float(np.median(similarity))}, (choice, similarity)


def _graph(release: PublicRelease, out: Path, *, rows: int, force: bool) -> tuple[dict, Any]:
    result = write_graph(release, out, force=force, rows=rows)
    return {"groups": int(len(result.images))}, result


def _pair_accuracy(result: GraphResult, store: fmt.KeyStore) -> dict:
    truth = store["encryption/private_index"][:]
    return {"pair_accuracy": pair_accuracy(result.groups, truth, store.params.n_private)}


ATTACKS = (  # in the order of ``attack --help``, the strength runs and its verdict
    Attack("pool", help="match each encryption against a data set the attacker can obtain",
           description="Match each encryption against every image of POOL by a sign-invariant similarity "
           "(correlation of the pixel differences of |x|) and submit the best match. Works when the private images come from an "
           "obtainable set (CIFAR-10, the embedded data).",
           attacker="an attacker with the private source set",
           has="the data set the private images were drawn from (e.g. CIFAR-10), matched against every encryption",
           run=_pool, uses_pool=True),
    Attack("graph", help="the keyless attack of Carlini et al. (no pool needed)",
           description="Group encryptions that share a private image (sign-invariant features, k-means within each "
           "label class), recover the lambdas from label.npy and reconstruct each private image by a least-squares fit of "
           "|encryption| (Carlini et al., arXiv 2011.05315).",
           attacker="an attacker with only the public files",
           has="the encryptions and label.npy, nothing else: the keyless attack of Carlini et al.",
           run=_graph, measure=_pair_accuracy),
)
