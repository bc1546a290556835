"""Known attacks on InstaHide releases, run by the tool itself (issue #10).

:mod:`attacks.pool` matches encryptions against a data set the attacker can obtain;
:mod:`attacks.graph` is the keyless attack of Carlini et al. (IEEE S&P 2021, arXiv 2011.05315);
:mod:`attacks.submit` writes an attack's answer as a submission; :mod:`attacks.registry` holds
``ATTACKS``, a row per attack, from which ``instahide attack NAME`` and ``instahide strength``
(:mod:`commands.attack`) are built.  The attacks read a release's public files only and import
nothing but :mod:`challenge`; :mod:`verifier.strength` scores and reports them.
"""

from challenge.exports import lazy_exports as _lazy_exports

# docs/API.md's names, each imported on first use
_EXPORTS = {"graph_attack": "attacks.graph", "open_public": "attacks.public", "pool_attack": "attacks.pool"}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
