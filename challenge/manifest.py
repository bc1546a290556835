"""The manifest (docs/FORMAT.md, section 4): one schema, used by the writer (``generate``), the
readers (``verify``, ``reproduce``, ``inspect``, the leaderboard, the attacks) and ``audit`` alike.

:class:`Manifest` is what a release publishes about itself, both ways (on the model of
zarr-python's ``ArrayV3Metadata``): :meth:`Manifest.to_json` is the object ``generate`` writes,
:meth:`Manifest.from_json` its exact inverse, which checks every field as it reads it and raises
:class:`ManifestError` carrying every problem (:func:`manifest_problems`) -- or, for the readers
that go on with a damaged manifest (``audit`` reports each problem as a finding), collects them and
leaves the fields that failed as None.  :meth:`Manifest.read` finds and reads a release's manifest.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from challenge import format as fmt
from challenge.domain import describe
from challenge.errors import UsageError
from challenge.params import MAX_ENCRYPTIONS, Params
from challenge.text import printable

__all__ = ["FIELDS", "FORMAT_NAME", "Manifest", "ManifestError", "PREVIEW_COUNT", "SEED_NOTES",
           "expected_arrays", "json_get", "manifest_path", "manifest_problems", "seed_json"]

FORMAT_NAME = "instahide-challenge-release"
PREVIEW_COUNT = 64  # encryptions on preview.png
SEED_NOTES = {  # manifest "seed.note" by kind; fixed text, so an audit can check it byte for byte
    "practice": "practice seed: guessable, anyone can replay every key",
    "strong": "256-bit seed from a CSPRNG or the maintainer; keys are drawn from ChaCha20 keystreams",
}
FIELDS = frozenset({"format", "format_version", "generator", "params", "n_encryptions", "class_names",
                    "pixel_domain", "arrays", "seed", "sources", "key_store", "files"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
# the generator's version: a PEP 440 release number (with an optional pre-, post- or dev-release), never
# free text, so the field cannot carry anything else (reproduce checks its value)
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}((a|b|rc)[0-9]{1,4})?(\.post[0-9]{1,4})?(\.dev[0-9]{1,4})?")


class ManifestError(fmt.FormatError):
    """A manifest that departs from the schema; ``problems`` lists every (field, message)."""

    def __init__(self, where: str, problems: list[tuple[str, str]]):
        self.problems = problems
        field_, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{where}: {field_ or 'fields'}: {message}{more}")


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a release says about itself; the other fields of the JSON follow from these.  A field is
    None only in a manifest read with ``problems`` (:meth:`from_json`), where it failed its check.

    Parameters
    ----------
    params : Params
        The release's parameters.
    class_names : list of str
        The private set's class names, indexed by label (empty when it has none).
    n_classes : int
        Columns of ``label.npy``.
    practice : bool
        The seed is a replayable practice seed.
    sources : dict
        ``{"private": {fingerprint, images, notes}, "public": the same or None}``.
    commitment : str
        ``"sha256:"`` and 64 hex digits: the key store's commitment.
    files : dict of str to str
        Each public file's name -> its SHA-256.
    version : int, optional
        The format version.
    generator : dict, optional
        The tool that wrote the release."""

    params: Params
    class_names: list[str]
    n_classes: int  # columns of label.npy: the class names' count, or the labels' range when unnamed
    practice: bool  # a replayable practice seed, or a strong one
    sources: dict  # {"private": {fingerprint, images, notes}, "public": the same or None}
    commitment: str  # "sha256:" + 64 hex digits, of the key store
    files: dict[str, str]  # public file name -> SHA-256
    version: int = fmt.FORMAT_VERSION
    generator: dict = field(default_factory=fmt.generator_info)

    def fingerprint(self, role: str) -> str | None:
        """``sources.ROLE.fingerprint``: the data set the release was drawn from.

        Parameters
        ----------
        role : {'private', 'public'}
            Which set.

        Returns
        -------
        fingerprint : str or None
            64 hex digits; None for a release without public patches, or sources that failed
            their check.
        """
        source = (self.sources or {}).get(role)
        return source["fingerprint"] if source else None

    def images(self, role: str) -> int | None:
        """``sources.ROLE.images``: the size of the data set the release was drawn from; None as for
        :meth:`fingerprint`."""
        source = (self.sources or {}).get(role)
        return source["images"] if source else None

    def to_json(self) -> dict:
        """The manifest as the JSON object ``manifest.json`` holds.

        Returns
        -------
        manifest : dict
            Every field of FORMAT.md 4, the derived ones included; :meth:`from_json` is its inverse.
        """
        return {
            "format": FORMAT_NAME,
            "format_version": self.version,
            "generator": self.generator,
            "params": self.params.to_dict(self.version),
            "n_encryptions": self.params.n_encryptions,
            "class_names": list(self.class_names),
            "pixel_domain": describe(self.params.domain),
            "arrays": expected_arrays(self.params, self.n_classes),
            "seed": seed_json(self.practice),
            "sources": self.sources,
            "key_store": {"commitment": self.commitment, "scheme": fmt.COMMITMENT_SCHEMES[self.version]},
            "files": self.files,
        }

    def to_bytes(self) -> bytes:
        """The bytes of ``manifest.json`` (FORMAT.md 4)."""
        return fmt.json_bytes(self.to_json())

    @classmethod
    def from_json(cls, obj, where: str = fmt.MANIFEST_FILE, problems: list[tuple[str, str]] | None = None) -> "Manifest":
        """The manifest of the JSON object ``obj``, every field checked; the exact inverse of
        :meth:`to_json` (``from_json(m.to_json()) == m``, and a stored manifest re-serialises to its
        bytes).

        Parameters
        ----------
        obj : dict
            The parsed JSON.
        where : str, optional
            What a problem names as its place (the file it came from).
        problems : list, optional
            Given, each problem is appended to it as (field, message) instead of raised, and each
            field that failed its check is None: for tools that go on with a damaged manifest.

        Returns
        -------
        manifest : Manifest

        Raises
        ------
        ManifestError
            Without ``problems``, listing every problem (a :class:`challenge.UsageError`).
        """
        if not isinstance(obj, dict):
            raise ManifestError(where, [("", "expected a JSON object")])
        params, found = manifest_problems(obj)
        if found and problems is None:
            raise ManifestError(where, found)
        failed = {name.split(".")[0] for name, _ in found} | ({"sources"} if params is None else set())  # checked against params
        if problems is not None:
            problems += found

        def read(name: str, convert=lambda value: value):
            return None if name in failed else convert(obj[name])

        names = read("class_names", list)
        return cls(
            params=params,
            class_names=names,
            n_classes=len(names) if names else None,
            practice=read("seed", lambda seed: seed["replayable"]),
            sources=read("sources"),
            commitment=read("key_store", lambda key_store: key_store["commitment"]),
            files=read("files", dict),
            version=read("format", lambda _: obj["format_version"]),
            generator=read("generator", dict),
        )

    @classmethod
    def read(cls, release: Path, problems: list[tuple[str, str]] | None = None) -> "Manifest":
        """The manifest of a release, read as :meth:`from_json` reads it.

        Parameters
        ----------
        release : path
            The release folder or its ``public/`` folder, as participants have it.
        problems : list, optional
            As for :meth:`from_json`.

        Returns
        -------
        manifest : Manifest

        Raises
        ------
        ManifestError
            Without ``problems``, listing every problem; :class:`challenge.UsageError` for a
            missing or unreadable ``manifest.json``.
        """
        path = manifest_path(release)
        return cls.from_json(fmt.read_json(path), printable(path), problems)


def seed_json(practice: bool) -> dict:
    """The manifest's ``seed``: its kind, and what that means for the keys."""
    kind = "practice" if practice else "strong"
    return {"kind": kind, "replayable": practice, "note": SEED_NOTES[kind]}


def expected_arrays(params: Params, n_classes: int | None) -> dict:
    """The manifest's ``arrays``: dtype and shape of encryption.npy and label.npy."""
    return {
        fmt.ENCRYPTION_FILE: {"dtype": "float32", "shape": [params.n_encryptions, *params.image_shape], "layout": "NHWC"},
        fmt.LABEL_FILE: {"dtype": "float32", "shape": [params.n_encryptions, n_classes]},
    }


def manifest_problems(manifest: dict) -> tuple[Params | None, list[tuple[str, str]]]:
    """Every way ``manifest`` departs from the schema, as (field, message); and its parameters when
    they are valid (the checks that depend on them are skipped otherwise)."""
    problems: list[tuple[str, str]] = []

    def bad(field_: str, message: str) -> None:
        problems.append((field_, message))

    if set(manifest) != FIELDS:
        extra, missing = sorted(set(manifest) - FIELDS), sorted(FIELDS - set(manifest))
        bad("", f"fields: unexpected {extra}, missing {missing}")
    version = manifest.get("format_version")
    if manifest.get("format") != FORMAT_NAME or not _readable(version):
        bad("format", f"expected {FORMAT_NAME} version {' or '.join(map(str, fmt.READABLE_VERSIONS))}")
        version = fmt.FORMAT_VERSION
    generator = manifest.get("generator")
    if not (isinstance(generator, dict) and set(generator) == {"name", "version"}
            and generator["name"] == fmt.generator_info()["name"] and isinstance(generator["version"], str)
            and _VERSION.fullmatch(generator["version"])):
        bad("generator", f"expected {{name: {fmt.generator_info()['name']}, version: a release number such as "
                         f"{fmt.generator_info()['version']}}}")
    try:
        params = fmt.read_params(manifest.get("params"), "params", version)
    except fmt.FormatError as e:
        bad("params", str(e))
        params = None
    if params is not None:
        if not _same(manifest.get("n_encryptions"), params.n_encryptions):
            bad("n_encryptions", f"{manifest.get('n_encryptions')!r}, expected n_private * per_image = {params.n_encryptions}")
        if not _same(manifest.get("pixel_domain"), describe(params.domain)):
            bad("pixel_domain", f"expected {describe(params.domain)}")
        names = manifest.get("class_names")
        arrays = expected_arrays(params, len(names) if isinstance(names, list) else None)
        if not _same(manifest.get("arrays"), arrays):
            bad("arrays", f"expected {arrays}")
        _check_sources(manifest.get("sources"), params, bad)
    names = manifest.get("class_names")
    if not (isinstance(names, list) and names and all(isinstance(c, str) for c in names)):
        bad("class_names", "expected a non-empty list of strings")
    seed = manifest.get("seed")
    if not (isinstance(seed, dict) and set(seed) == {"kind", "replayable", "note"}
            and isinstance(seed["kind"], str) and seed["kind"] in SEED_NOTES and seed["replayable"] is (seed["kind"] == "practice")
            and seed["note"] == SEED_NOTES[seed["kind"]]):
        bad("seed", "expected {kind: strong|practice, replayable: kind == practice, note: the generator's note for the kind}")
    key_store, scheme = manifest.get("key_store"), fmt.COMMITMENT_SCHEMES[version]
    if not (isinstance(key_store, dict) and set(key_store) == {"commitment", "scheme"}
            and key_store["scheme"] == scheme
            and isinstance(key_store["commitment"], str) and key_store["commitment"].startswith("sha256:")
            and _HEX64.fullmatch(key_store["commitment"][7:])):
        bad("key_store", f"expected {{commitment: sha256:<64 hex>, scheme: {scheme}}}")
    files = manifest.get("files")
    if not (isinstance(files, dict) and all(isinstance(v, str) and _HEX64.fullmatch(v) for v in files.values())):
        bad("files", "expected an object of file name -> SHA-256 (64 lower-case hex digits)")
    return params, problems


def _same(value, expected) -> bool:
    """Equal as JSON text, so ``1`` is not ``1.0`` and ``true`` not ``1``: a manifest is exactly what
    the writer would write, and re-serialises to its own bytes."""
    return json.dumps(value, sort_keys=True) == json.dumps(expected, sort_keys=True)


def _readable(version) -> bool:
    return type(version) is int and version in fmt.READABLE_VERSIONS


def _check_sources(sources, params: Params, bad) -> None:
    def source_ok(s, minimum: int) -> bool:
        return (isinstance(s, dict) and set(s) == {"fingerprint", "images", "notes"}
                and isinstance(s["fingerprint"], str) and bool(_HEX64.fullmatch(s["fingerprint"]))
                and type(s["images"]) is int and minimum <= s["images"] <= MAX_ENCRYPTIONS
                and isinstance(s["notes"], dict)
                and all(isinstance(k, str) and type(v) is int for k, v in s["notes"].items()))

    if not (isinstance(sources, dict) and set(sources) == {"private", "public"}):
        bad("sources", "expected {private, public}")
        return
    if not source_ok(sources["private"], params.n_private):
        bad("sources.private", f"expected {{fingerprint: 64 hex, images: {params.n_private}..{MAX_ENCRYPTIONS}, notes: counts}}")
    if params.k_public and not source_ok(sources["public"], params.k_public):
        bad("sources.public", f"expected {{fingerprint: 64 hex, images: {params.k_public}..{MAX_ENCRYPTIONS}, notes: counts}}")
    if not params.k_public and sources["public"] is not None:
        bad("sources.public", f"expected null: params.mode {params.mode} uses no public patch")


def manifest_path(release: Path) -> Path:
    """``release/public/manifest.json``, or ``release/manifest.json`` when ``release`` is the public
    folder; not a release when neither is there."""
    release = Path(release)
    path = release / fmt.PUBLIC_DIR / fmt.MANIFEST_FILE
    if not os.path.lexists(path):
        path = release / fmt.MANIFEST_FILE
    if not os.path.lexists(path):  # a FIFO or a symlink is there to be refused by name, when read
        raise UsageError(f"{release}: not a release (no {fmt.PUBLIC_DIR}/{fmt.MANIFEST_FILE} or {fmt.MANIFEST_FILE})")
    return path


def json_get(obj, *keys):
    """``obj[k1][k2]...`` through JSON objects, or None where a level is missing or not an object."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj
