"""Validate and score submitted reconstructions against a release's ground truth."""

from challenge.exports import lazy_exports as _lazy_exports

_EXPORTS = {  # docs/API.md's names, each imported on first use
    "format_table": "verifier.scoring", "platform_scores": "verifier.scoring", "score_array": "verifier.scoring",
    "selected_rows": "verifier.scoring", "write_baseline": "verifier.baselines",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
