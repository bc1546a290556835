"""Known attacks on InstaHide releases, run by the tool itself (issue #10).

:mod:`attacks.pool` matches encryptions against a data set the attacker can obtain;
:mod:`attacks.graph` is the keyless attack of Carlini et al. (IEEE S&P 2021, arXiv 2011.05315);
:mod:`attacks.submit` writes an attack's answer as a submission; :mod:`attacks.registry` holds
``ATTACKS``, a row per attack, from which ``instahide attack NAME`` and ``instahide strength``
(:mod:`commands.attack`) are built.  The attacks read a release's public files only and import
nothing but :mod:`challenge`; :mod:`verifier.strength` scores and reports them.
"""
