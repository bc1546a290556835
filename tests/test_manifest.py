"""``Manifest`` both ways: ``from_json`` checks every field and is the exact inverse of ``to_json``."""

import json

import pytest

from challenge import format as fmt
from challenge.keystream import parse_seed
from challenge.manifest import Manifest, ManifestError
from generator.release import generate
from tests.helpers import TINY, resized


@pytest.mark.parametrize("version, shape", [(1, (32, 32, 3)), (2, (32, 32, 3)), (3, (32, 32, 3)), (3, (9, 11, 1))])
def test_a_stored_manifest_reads_and_writes_back_byte_for_byte(tmp_path, private_set, public_bank, version, shape):
    out = tmp_path / "release"
    written = generate(out, TINY, parse_seed("round trip", practice=True), resized(private_set, shape),
                       resized(public_bank, shape), practice=True, format_version=version)
    stored = (out / "public" / fmt.MANIFEST_FILE).read_bytes()
    manifest = Manifest.from_json(json.loads(stored))
    assert manifest.to_bytes() == stored and manifest.to_json() == written
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.version == version and manifest.params.image_shape == shape and manifest.practice


def test_from_json_lists_every_problem(tiny_release):
    obj = json.loads((tiny_release / "public" / fmt.MANIFEST_FILE).read_text())
    obj["seed"]["replayable"] = True  # a strong seed said to be replayable
    obj["key_store"]["commitment"] = "sha256:xyz"
    with pytest.raises(ManifestError) as e:
        Manifest.from_json(obj)
    assert [field for field, _ in e.value.problems] == ["seed", "key_store"]
    assert str(e.value).startswith("manifest.json: seed: ") and str(e.value).endswith("(and 1 more)")
    with pytest.raises(ManifestError, match="expected a JSON object"):
        Manifest.from_json([obj])


def test_numbers_are_read_as_written_not_merely_equal(tiny_release):
    """``[-1, 1]`` equals ``[-1.0, 1.0]`` in Python but is not the manifest's text: it would not
    re-serialise to the bytes it was read from."""
    obj = json.loads((tiny_release / "public" / fmt.MANIFEST_FILE).read_text())
    obj["pixel_domain"]["range"] = [-1, 1]
    with pytest.raises(ManifestError) as e:
        Manifest.from_json(obj)
    assert [field for field, _ in e.value.problems] == ["pixel_domain"]
