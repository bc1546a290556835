"""Known attacks on InstaHide releases, run by the tool itself (issue #10).

:mod:`attacks.pool` matches encryptions against a data set the attacker can obtain;
:mod:`attacks.graph` is the keyless attack of Carlini et al. (IEEE S&P 2021, arXiv 2011.05315);
:mod:`attacks.strength` runs them all on a release and reports what they recover.
"""
