"""Contact sheets of any image shape, grey or RGB, with and without labels; the release preview per
format version; the labelled ``inspect`` sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from challenge.format import open_key_store
from challenge.preview import LABELLED_PREVIEW_VERSION, contact_sheet, release_preview
from verifier.describe import sheet, write_sheet

WHITE = 255


def images(shape: tuple[int, int, int], n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def tile(sheet_pixels: np.ndarray, top: int, left: int, shape: tuple[int, int, int], scale: int) -> np.ndarray:
    h, w = shape[0] * scale, shape[1] * scale
    return sheet_pixels[top : top + h, left : left + w]


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3), (32, 32, 3), (7, 12, 3)])
def test_unlabelled_sheet_places_every_image_enlarged_between_white_gaps(shape):
    x = images(shape)
    pixels = np.asarray(contact_sheet(x, columns=4, scale=2, gap=2))
    h, w = shape[0] * 2, shape[1] * 2
    assert pixels.shape == (3 * (h + 2) + 2, 4 * (w + 2) + 2, 3)  # 10 tiles: 3 rows of 4
    for i, image in enumerate(x):
        r, c = divmod(i, 4)
        got = tile(pixels, 2 + r * (h + 2), 2 + c * (w + 2), shape, 2)
        np.testing.assert_array_equal(got, np.broadcast_to(image.repeat(2, 0).repeat(2, 1), (h, w, 3)))
    assert np.all(pixels[:2] == WHITE) and np.all(pixels[:, :2] == WHITE)
    assert np.all(pixels[-(h + 2) :, 2 * (w + 2) + 2 :] == WHITE)  # the two places after the 10th tile


def test_grey_tiles_stay_grey():
    pixels = np.asarray(contact_sheet(images((28, 28, 1)), captions=[str(i) for i in range(10)], title="grey"))
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3)])
def test_labels_go_under_the_tiles_and_above_them_without_touching_a_tile(shape):
    x = images(shape, n=3)
    plain = np.asarray(contact_sheet(x, columns=3))
    labelled = np.asarray(contact_sheet(x, columns=3, captions=["row 0", "row 1", "row 2"], title="three images"))
    h, w = shape[0] * 2, shape[1] * 2
    top = labelled.shape[0] - plain.shape[0] - 12  # the title line, above; one caption line under each tile
    assert top > 0 and labelled.shape[1] == plain.shape[1]
    for i, image in enumerate(x):
        got = tile(labelled, top + 2, 2 + i * (w + 2), shape, 2)
        np.testing.assert_array_equal(got, np.broadcast_to(image.repeat(2, 0).repeat(2, 1), (h, w, 3)))
        caption = labelled[top + 2 + h : top + 2 + h + 12, 2 + i * (w + 2) : 2 + i * (w + 2) + w]
        assert (caption < 128).any(), f"no ink under tile {i}"
    assert (labelled[:top] < 128).any(), "no title"


def test_a_caption_wider_than_its_tile_widens_the_column():
    x = images((7, 7, 3), n=2)
    pixels = np.asarray(contact_sheet(x, columns=2, scale=1, captions=["a rather long caption", "b"]))
    assert pixels.shape[1] > 2 * (7 + 2) + 2 + 100  # about 6 px per character


def test_contact_sheet_refuses_what_is_not_an_image_set():
    for bad in (np.zeros((2, 8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32)):
        with pytest.raises(ValueError, match="uint8"):
            contact_sheet(bad)


def test_release_preview_is_labelled_only_from_format_version_3():
    x = images((32, 32, 3), n=64)
    for version in (1, 2):  # their preview bytes are pinned (tests/test_reproduce.py): the unlabelled sheet
        assert np.array_equal(np.asarray(release_preview(x, version)), np.asarray(contact_sheet(x)))
    labelled = np.asarray(release_preview(x, LABELLED_PREVIEW_VERSION))
    assert labelled.shape != np.asarray(contact_sheet(x)).shape and (labelled < 128).any()
    grey = np.asarray(release_preview(images((28, 28, 1), n=64), LABELLED_PREVIEW_VERSION))
    assert np.array_equal(grey[..., 0], grey[..., 2])


def test_inspect_sheet_labels_each_private_image_and_its_encryptions(tiny_release, tmp_path):
    store = open_key_store(tiny_release / "secret" / "keys.zarr")
    tiles, columns, captions = sheet(tiny_release, store, count=3)
    owner = store.read("encryption/private_index")[:, 0]
    assert tiles.shape == (3 * columns, 32, 32, 3) and len(captions) == len(tiles)
    for i in range(3):
        row = captions[i * columns : (i + 1) * columns]
        assert row[0] == f"private {i}"
        shown = [int(c.split()[1]) for c in row[1:] if c]
        assert shown and all(owner[e] == i for e in shown)
    path = write_sheet(tiny_release, tiny_release / "secret" / "keys.zarr", tmp_path / "sheet.png", count=3)
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    unlabelled = np.asarray(contact_sheet(tiles, columns=columns))
    assert pixels.shape[0] > unlabelled.shape[0] and (pixels[:12] < 128).any()  # a title, captions
