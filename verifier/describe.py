"""Describe a release for people: parameters, sizes, digests; with the keys, a picture of the
private images beside their encryptions.  Nothing here is a check (``audit`` is the check): it
reports what the files say, reading only the manifest, file sizes and, for the sheet, the rows it
shows.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from challenge import files
from challenge import format as fmt
from challenge.domain import describe as domain_json, to_uint8
from challenge.errors import UsageError, argument
from challenge.preview import contact_sheet, save_png
from challenge.files import safe_name
from challenge.manifest import Manifest, json_get, seed_json
from challenge.places import check_output
from challenge.npy import open_npy


def public_folder(release: Path) -> Path:
    """The public folder of ``release``: ``release/public/``, or ``release`` itself when it is one (as
    participants have it; ``verify --release`` accepts both too)."""
    release = Path(release)
    inside = release / fmt.PUBLIC_DIR
    return release if not inside.is_dir() and (release / fmt.MANIFEST_FILE).is_file() else inside


def summary(release: Path, keys: Path | None = None) -> dict:
    """What the manifest and the file system say about a release (and its key store).  A field of
    the manifest that is malformed is None, and ``problems`` says why (``audit`` is the check)."""
    public = public_folder(release)
    problems = []
    manifest = Manifest.read(public, problems)
    params, files = manifest.params, manifest.files or {}
    sizes = {name: _size(public / name) if safe_name(name) else None for name in sorted(files)}
    out = {
        "release": str(release),
        "format_version": manifest.version,
        "generator": manifest.generator,
        "params": params.to_dict(manifest.version or fmt.FORMAT_VERSION) if params else None,
        "n_encryptions": params.n_encryptions if params else None,
        "class_names": manifest.class_names,
        "pixel_domain": domain_json(params.domain) if params else None,
        "seed": None if manifest.practice is None else seed_json(manifest.practice),
        "sources": manifest.sources,
        "commitment": manifest.commitment,
        "files": {name: {"bytes": sizes[name], "sha256": files[name]} for name in sorted(files)},
        "public_bytes": sum(s for s in sizes.values() if s),
        "problems": [f"{field or 'fields'}: {message}" for field, message in problems],
    }
    if keys is not None:
        store = fmt.open_key_store(keys)
        out["key_store"] = {
            "path": str(keys),
            "bytes": sum(_size(Path(root, f)) or 0 for root, _, names in os.walk(keys) for f in names),
            "commitment": fmt.commitment(store),
        }
        out["key_store"]["matches_manifest"] = out["key_store"]["commitment"] == out["commitment"]
    return out


def _object(value) -> dict:
    return value if isinstance(value, dict) else {}


def _size(path: Path) -> int | None:
    return path.lstat().st_size if path.is_file() and not path.is_symlink() else None


def render(info: dict) -> str:
    """The summary as a few lines of text (whatever shape the manifest's fields have)."""
    p, seed, sources = (_object(info[key]) for key in ("params", "seed", "sources"))
    classes = info["class_names"] if isinstance(info["class_names"], list) else []
    lines = [
        f"release {info['release']} (format {info['format_version']}, generator "
        f"{json_get(info, 'generator', 'name')} {json_get(info, 'generator', 'version')})",
        f"  mode {p.get('mode')}, k={p.get('k')}, k_private={p.get('k_private')}, c1={p.get('c1')}, c2={p.get('c2')}, "
        f"domain {p.get('domain')}, balanced {'yes' if p.get('balanced') else 'no'}",
        f"  {p.get('n_private')} private images x {p.get('per_image')} = {info['n_encryptions']} encryptions; "
        f"{len(classes)} classes ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})",
        f"  seed: {seed.get('kind')}" + (" (REPLAYABLE: anyone can replay every key)" if seed.get("replayable") else ""),
    ]
    for role, source in sources.items():
        if isinstance(source, dict):
            lines.append(f"  {role} source: {source.get('images')} images, fingerprint {str(source.get('fingerprint'))[:16]}..., "
                         f"notes {source.get('notes') or 'none'}")
    lines += [f"  MALFORMED (shown as None; run audit): {problem}" for problem in info["problems"]]
    lines.append(f"  key store commitment: {info['commitment']}")
    lines.append(f"  public files: {len(info['files'])} + manifest.json, {info['public_bytes']:,} bytes")
    for name, f in info["files"].items():
        size = f"{f['bytes']:>12,}" if f["bytes"] is not None else f"{'missing':>12}"
        lines.append(f"    {size}  {str(f['sha256'])[:16]}...  {name}")
    if "key_store" in info:
        k = info["key_store"]
        verdict = "matches the manifest" if k["matches_manifest"] else "DOES NOT match the manifest (run audit)"
        lines.append(f"  key store {k['path']}: {k['bytes']:,} bytes, commitment {verdict}")
    return "\n".join(lines)


def sheet(release: Path, store: fmt.KeyStore, count: int = 8, shown: int = 7,
          rows: int = 65536) -> tuple[np.ndarray, int, list[str]]:
    """uint8 tiles, columns and captions of a contact sheet: each of the first ``count`` private
    images, then up to ``shown`` encryptions whose first image it is (white where it has fewer).
    The image shape is the key store's, whatever it is."""
    params = store.params
    count, shown = min(count, params.n_private), min(shown, params.per_image)
    private = store.rows("private/images", 0, count)
    shape = private.shape[1:]
    encryptions = open_npy(public_folder(release) / fmt.ENCRYPTION_FILE, (params.n_encryptions, *shape))
    owner = np.concatenate([store.rows("encryption/private_index", a, a + rows)[:, 0]
                            for a in range(0, params.n_encryptions, rows)])
    tiles = np.full((count, 1 + shown, *shape), 255, np.uint8)
    captions = [[""] * (1 + shown) for _ in range(count)]
    tiles[:, 0] = private
    for i in range(count):
        mine = np.flatnonzero(owner == i)[:shown]
        tiles[i, 1 : 1 + len(mine)] = to_uint8(encryptions[mine], params.domain)
        captions[i][: 1 + len(mine)] = [f"private {i}", *(f"enc {e}" for e in mine)]
    return tiles.reshape(-1, *shape), 1 + shown, [c for row in captions for c in row]


SHEET_TITLE = "SECRET: private image i (left), then encryptions (rows) whose first image it is"


def write_sheet(release: Path, keys: Path, out: Path, count: int = 8) -> Path:
    """Save the sheet as PNG at ``out``: never inside a release or a key store, and only with the
    key store the release commits to (another release's keys would draw the wrong ground truth).

    The sheet shows the ground truth, so it is as secret as the key store: mode 0600 whatever the
    umask, and written atomically (a full disk leaves no half picture that looks whole).
    """
    check_output(out, argument("out", flag="--sheet"))
    store = fmt.open_key_store(keys)
    fmt.check_commitment(Manifest.read(release, problems=[]).commitment, store, release, keys)
    tiles, columns, captions = sheet(release, store, count)
    png = io.BytesIO()
    save_png(contact_sheet(tiles, columns=columns, captions=captions, title=SHEET_TITLE), png)
    try:
        return files.write_atomic(out, png.getvalue(), mode=0o600)
    except files.UnsafeFile as e:
        raise UsageError(f"{argument('out', flag='--sheet')} {e}") from None
