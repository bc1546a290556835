"""Build InstaHide challenge releases: draw the secret keys, encode, write the release."""

from challenge.exports import lazy_exports as _lazy_exports

_EXPORTS = {  # docs/API.md's names, each imported on first use
    "default_private": "generator.default_data", "default_public": "generator.default_data",
    "generate": "generator.release", "load_sources": "generator.sources",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
