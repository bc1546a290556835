"""--dask: a 2-worker LocalCluster (worker processes) gives the same bytes and scores as one process.

One cluster serves the whole module (starting one takes seconds); the CLI reaches it by its
scheduler address, the way ``--dask ADDRESS`` is used on a real cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from challenge.keystream import parse_seed
from challenge.params import Params
from commands.main import main
from generator.distributed import on_cluster, task_rows, zarr_span
from generator.release import generate
from tests.helpers import HANG, SEED, TINY, extra_module, resized
from tests.test_reproduce import KNOWN, KNOWN_GREY, digests

distributed = extra_module("distributed")

# 4500 encryptions: two tasks (4096 rows, the key store's sign-row chunk, and the rest)
TWO_TASKS = Params(n_private=100, per_image=45)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, distributed.Client(cluster) as client:
        yield client


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tasks_cover_whole_sign_chunks_and_the_zarr_chunks_that_begin_in_them():
    assert [task_rows(chunk, 4096) for chunk in (4096, 1000, 5000)] == [4096, 4096, 8192]
    assert task_rows(100, 4500) == 4500  # fewer rows than one sign chunk: one task
    assert zarr_span(0, 4096, 1024, 10_000) == (0, 4096)
    assert zarr_span(0, 4096, 873, 10_000) == (0, 4365)  # chunk 4 (3492 ..) straddles: the first task's
    assert zarr_span(4096, 8192, 873, 10_000) == (4365, 8730)
    assert zarr_span(8192, 10_000, 873, 10_000) == (8730, 10_000)


@pytest.mark.parametrize("args", [
    ["--mode", "cross", "--chunk", "1000"],  # tasks encode in blocks smaller than themselves
    ["--mode", "mixup", "--formats", "npy"],  # no sign rows stored (all zero), no public.zarr
])
def test_generate_on_the_cluster_writes_the_bytes_of_one_process(tmp_path, client, args):
    common = ["generate", "--seed", "7", "--practice", "--n-private", "100", "--per-image", "45", *args]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--out", str(tmp_path / "there"), "--dask", client.scheduler.address]) == 0
    here, there = tree_bytes(tmp_path / "here"), tree_bytes(tmp_path / "there")
    assert list(here) == list(there) and all(here[name] == there[name] for name in here)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build folder or lock left


@pytest.mark.parametrize("version, shape, known", [
    (3, None, KNOWN[3]), (2, None, KNOWN[2]), (1, None, KNOWN[1]), (3, (28, 28, 1), KNOWN_GREY)])
def test_generate_on_the_cluster_writes_the_pinned_known_answers(tmp_path, client, private_set, public_bank,
                                                                  version, shape, known):
    """The practice release "kat" written by the cluster: the digests tests/test_reproduce.py pins for one process."""
    sets = [private_set, public_bank] if shape is None else [resized(s, shape) for s in (private_set, public_bank)]
    out = tmp_path / "kat"
    generate(out, TINY, seed=parse_seed("kat", practice=True), private=sets[0], public=sets[1], practice=True,
             format_version=version,
             write_elsewhere=on_cluster(client))
    assert digests(out) == known


# grey; sign rows with pad bits; public.zarr chunks of 873 rows, one across the two tasks' rows
@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 11, 3), (40, 40, 3)])
def test_generate_on_the_cluster_at_another_shape_writes_the_bytes_of_one_process(tmp_path, client, private_set,
                                                                                  public_bank, shape):
    sets = [resized(s, shape) for s in (private_set, public_bank)]
    generate(tmp_path / "here", TWO_TASKS, seed=SEED, private=sets[0], public=sets[1], chunk=1000)
    generate(tmp_path / "there", TWO_TASKS, seed=SEED, private=sets[0], public=sets[1], chunk=1000,
             write_elsewhere=on_cluster(client))
    here, there = tree_bytes(tmp_path / "here"), tree_bytes(tmp_path / "there")
    assert list(here) == list(there) and all(here[name] == there[name] for name in here)


def test_dask_without_dask_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["generate", "--out", str(tmp_path / "r"), "--dask", "local:2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'instahide-challenge[dask]'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spec", ["local:0", "local:x", "", "local:100000"])
def test_bad_dask_spec_is_a_usage_error(spec, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--out", "r", "--dask", spec])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


# --- scoring: verify, leaderboard -------------------------------------------------------------

ROWS = 32  # 100 encryptions: four blocks, the last one short


def test_scoring_tasks_are_whole_blocks_about_eight_per_worker():
    from verifier.distributed import task_span

    assert task_span(100, 32, 2) == 32  # fewer blocks than 16 tasks: a block a task
    assert task_span(100, 4, 2) == 8  # 25 blocks: 2 a task, 13 tasks
    assert task_span(200_000, 2048, 2) == 7 * 2048  # 98 blocks: 14 tasks
    assert task_span(200_000, 2048, 1) == 13 * 2048
    assert task_span(10, 2048, 4) == 2048


def test_accumulator_parts_merged_in_any_order_are_one_pass():
    """What a scoring task returns: the accumulator of its rows, merged by the client in the order tasks end."""
    from verifier.scoring import Accumulator

    rng = np.random.default_rng(5)
    ssim, l2 = rng.random((10, 3)), rng.random((10, 3))
    index, selected = rng.integers(0, 6, (10, 3)), rng.random(10) < 0.7
    whole = Accumulator(10, 6, selected)
    for a in range(0, 10, 2):
        whole.add(a, ssim[a : a + 2], l2[a : a + 2], index[a : a + 2])
    merged = Accumulator(10, 6, selected)
    for a, b in ((6, 10), (0, 2), (2, 6)):
        part = Accumulator(b - a, 6, selected[a:b])
        for c in range(a, b, 2):
            part.add(c - a, ssim[c : c + 2], l2[c : c + 2], index[c : c + 2])
        merged.merge(a, part)
    one, other = whole.result(), merged.result()
    assert one.summary == other.summary
    for name in ("encryptions", "max_ssim", "best_column", "best_per_private"):
        assert np.array_equal(getattr(one, name), getattr(other, name), equal_nan=True), name


@pytest.fixture(scope="module")
def submissions(tiny_release, tmp_path_factory):
    """blind and noise baselines, and a float submission with NaN and out-of-range values in two blocks."""
    from challenge.submission import open_for_scoring
    from verifier.baselines import write_baseline

    root = tmp_path_factory.mktemp("subs")
    expected, store = open_for_scoring(tiny_release / "public", tiny_release / "secret" / "keys.zarr")
    for kind in ("blind", "noise"):
        write_baseline(kind, root / kind, expected, store=store, release=tiny_release)
    bad = np.load(root / "blind" / "decryption.npy").astype(np.float64)
    bad[40, 1, 2, 0], bad[70, 0, 0, :] = np.nan, [0.5, 3.0, -7.0]
    (root / "bad").mkdir()
    np.save(root / "bad" / "decryption.npy", bad)
    return root


@pytest.mark.parametrize("kind, rows", [("blind", ROWS), ("noise", ROWS), ("bad", ROWS),
                                        ("noise", 4), ("bad", 4)])  # rows 4: tasks of 2 blocks
@pytest.mark.parametrize("holdout", [None, 0.5])
def test_scores_on_the_cluster_are_those_of_one_process(tiny_release, submissions, client, kind, rows, holdout):
    from challenge.submission import open_for_scoring
    from verifier.distributed import score_on_cluster
    from verifier.scoring import score, selected_rows

    expected, store = open_for_scoring(tiny_release / "public", tiny_release / "secret" / "keys.zarr")
    selected = selected_rows(store, holdout)
    here = score(submissions / kind, store, expected=expected, rows=rows, selected=selected)
    there = score_on_cluster(client, submissions / kind, store, expected, rows=rows, selected=selected)
    assert here[0].problems == there[0].problems and (here[1] is None) == (kind == "bad") == (there[1] is None)
    if here[1] is not None:
        assert here[1].summary == there[1].summary  # floats compared exactly
        for name in ("encryptions", "max_ssim", "best_column", "best_per_private"):
            assert np.array_equal(getattr(here[1], name), getattr(there[1], name), equal_nan=True), name


def test_scores_on_the_cluster_of_a_client_that_is_not_the_default(tiny_release, submissions, client):
    """Results are awaited on the given client's event loop, not on the default client's (a script
    with clusters of 1 and 2 workers, as benchmarks/bench_dask.py, hung now and then on the other's):
    here the default client's loop is held up until the scores are in."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from challenge.submission import open_for_scoring
    from verifier.distributed import score_on_cluster
    from verifier.scoring import score

    expected, store = open_for_scoring(tiny_release / "public", tiny_release / "secret" / "keys.zarr")
    here = score(submissions / "noise", store, expected=expected)[1]
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as cluster, distributed.Client(cluster) as other, \
            ThreadPoolExecutor(1) as thread:
        assert distributed.default_client() is other and other.loop is not client.loop
        release = threading.Event()
        other.loop.add_callback(release.wait)
        try:
            there = thread.submit(score_on_cluster, client, submissions / "noise", store, expected).result(timeout=HANG)[1]
        finally:
            release.set()
    assert there.summary == here.summary


def test_verify_and_leaderboard_with_dask_print_what_they_print_without(tiny_release, submissions, client, capsys,
                                                                         tmp_path):
    from commands.verify import main as verify_main

    keys, release = str(tiny_release / "secret" / "keys.zarr"), str(tiny_release)
    outputs = []
    for dask in ([], ["--dask", client.scheduler.address]):
        verify_main([str(submissions / "blind"), "--keys", keys, "--release", release, "--json", "--rows", str(ROWS),
                     "--out", str(tmp_path / "scores"), *dask])
        main(["leaderboard", *(str(submissions / k) for k in ("blind", "noise", "bad")), "--keys", keys,
              "--release", release, "--json", "--rows", str(ROWS), "--out", str(tmp_path / "board"), "--force", *dask])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and '"Max_SSIM"' in outputs[0]


# --- patches ----------------------------------------------------------------------------------

def test_tasks_of_patches_on_an_executor_cut_a_batch_in_four_per_worker():
    from generator.patches import executor_chunk_files

    assert [executor_chunk_files(1024, workers) for workers in (1, 2, 4, 8, 64)] == [256, 128, 64, 32, 32]


@pytest.mark.parametrize("chunk_files", [2, None])  # None: executor_chunk_files, a whole batch a task here
def test_patch_bank_on_the_cluster_is_the_bank_of_one_process_and_resumes(tmp_path, client, chunk_files):
    from generator.patches import build_patch_bank
    from tests.test_patches import SEED as BANK_SEED, Stop, make_public, store_bytes

    make_public(tmp_path / "pub")
    kw = dict(seed=BANK_SEED, crops_per_image=3, min_keypoints=3, batch_files=4)
    build_patch_bank(tmp_path / "pub", tmp_path / "whole", workers=1, chunk_files=2, **kw)
    on_cluster = dict(kw, executor=client.get_executor(pure=False), workers=2, chunk_files=chunk_files)

    def stop_after_two(done, total, patches):
        if done >= 8:
            raise Stop

    with pytest.raises(Stop):
        build_patch_bank(tmp_path / "pub", tmp_path / "cut", progress=stop_after_two, **on_cluster)
    resumed = build_patch_bank(tmp_path / "pub", tmp_path / "cut", **on_cluster)
    assert resumed.resumed_from_file == 8 and store_bytes(tmp_path / "whole") == store_bytes(tmp_path / "cut")


# --- audit ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged_release(tiny_release, tmp_path_factory):
    """The tiny release with encryption rows 3 and 70 and the lambdas of row 40 changed: findings in three chunks."""
    import shutil

    import zarr

    release = shutil.copytree(tiny_release, tmp_path_factory.mktemp("damaged") / "release")
    encryptions = np.load(release / "public" / "encryption.npy")
    encryptions[3, 0, 0, 0] += 0.25
    encryptions[70] = -encryptions[70]
    np.save(release / "public" / "encryption.npy", encryptions)
    lam = zarr.open_array(str(release / "secret" / "keys.zarr" / "encryption" / "lam"), mode="r+")
    lam[40] = [0.7, 0.06, 0.06, 0.06, 0.06, 0.06]
    return release


@pytest.fixture(scope="module")
def unreadable_keys(tmp_path_factory, private_set, public_bank):
    """A release of 4500 encryptions (its lambdas in key-store chunks of rows 0..4095 and 4096..4499)
    with the lambdas of row 3900 changed and their second chunk cut short: with ``--chunk 128`` on 2
    workers, a task checks rows 3840..4223 (three chunks) and cannot read the keys of its third."""
    import zarr

    release = tmp_path_factory.mktemp("unreadable") / "release"
    generate(release, TWO_TASKS, seed=SEED, private=private_set, public=public_bank, formats=("npy",))
    lam = zarr.open_array(str(release / "secret" / "keys.zarr" / "encryption" / "lam"), mode="r+")
    lam[3900] = [0.7, 0.06, 0.06, 0.06, 0.06, 0.06]
    chunk = release / "secret" / "keys.zarr" / "encryption" / "lam" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    return release


def test_an_unreadable_key_chunk_ends_the_row_checks_where_one_process_ends_them(unreadable_keys, client):
    from verifier.audit import audit
    from verifier.distributed import audit_on_cluster

    keys = unreadable_keys / "secret" / "keys.zarr"
    here = audit(unreadable_keys, keys, chunk=128)
    there = audit(unreadable_keys, keys, chunk=128, runner=audit_on_cluster(client))
    assert there.to_json() == here.to_json()
    assert [(f.file, f.message[:27]) for f in here.findings if f.check == "key_store"] == [
        ("secret/keys.zarr/encryption/lam", "rows 4096..4224: unreadable")]
    assert [f.where for f in here.findings if f.check == "seed_keys"] == ["row 3900"]  # two chunks before, same task


# 1 << 16: the files are hashed by several tasks; chunk 4: a task checks 2 chunks
@pytest.mark.parametrize("damaged, hash_task_bytes, chunk", [(False, None, ROWS), (True, None, ROWS), (True, 1 << 16, 4)])
def test_audit_on_the_cluster_reports_what_one_process_reports(tiny_release, damaged_release, client, damaged,
                                                               hash_task_bytes, chunk, monkeypatch, capsys):
    from verifier import audit as audit_module
    from verifier.audit import audit
    from verifier.distributed import audit_on_cluster

    if hash_task_bytes:
        monkeypatch.setattr(audit_module, "HASH_TASK_BYTES", hash_task_bytes)
    release = damaged_release if damaged else tiny_release
    keys = release / "secret" / "keys.zarr"
    here = audit(release, keys, chunk=chunk)
    there = audit(release, keys, chunk=chunk, runner=audit_on_cluster(client))
    assert there.to_json() == here.to_json() and here.sound is not damaged
    if damaged:
        assert {f.check for f in here.findings} >= {"digests", "commitment", "seed_keys", "lambda", "encryptions"}
        assert [f.where for f in here.findings if f.check == "encryptions"] == ["row 3 (+2 more)"]
    outputs = []
    for dask in ([], ["--dask", client.scheduler.address]):
        for json_flag in ([], ["--json"]):
            assert main(["audit", str(release), "--chunk", str(chunk), *json_flag, *dask]) == (3 if damaged else 0)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
