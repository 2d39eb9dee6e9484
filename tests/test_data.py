"""Tests for bncourse.data: MNIST-1D generation, caching, and batch orders."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bncourse import data
from bncourse.data import MNIST1D, batches, load_mnist1d

REPO = Path(__file__).resolve().parents[1]
CACHE_NAME = "mnist1d_v1_seed42.npz"


@pytest.fixture
def no_memo(monkeypatch):
    """An empty in-process memo for this test only."""
    monkeypatch.setattr(data, "_MEMO", {})


@pytest.fixture
def fake_generator(monkeypatch, mnist1d):
    """Replaces the 2-second generation with the session's arrays; counts the calls."""
    calls = []

    def fake(seed):
        calls.append(seed)
        return {k: t.numpy().copy() for k, t in zip(data._KEYS, mnist1d, strict=True)}

    monkeypatch.setattr(data, "_generate", fake)
    return calls


def assert_same(a: MNIST1D, b: MNIST1D) -> None:
    for name, ta, tb in zip(MNIST1D._fields, a, b, strict=True):
        assert torch.equal(ta, tb), name


# --- load_mnist1d ----------------------------------------------------------------------------


def test_shapes_and_dtypes(mnist1d):
    assert mnist1d.x_train.shape == (4000, 40) and mnist1d.x_train.dtype == torch.float32
    assert mnist1d.y_train.shape == (4000,) and mnist1d.y_train.dtype == torch.int64
    assert mnist1d.x_test.shape == (1000, 40) and mnist1d.x_test.dtype == torch.float32
    assert mnist1d.y_test.shape == (1000,) and mnist1d.y_test.dtype == torch.int64


def test_labels_cover_ten_classes(mnist1d):
    assert set(mnist1d.y_train.tolist()) == set(range(10))
    assert set(mnist1d.y_test.tolist()) == set(range(10))


def test_inputs_are_finite_and_standardized(mnist1d):
    assert torch.isfinite(mnist1d.x_train).all()
    x = torch.cat([mnist1d.x_train, mnist1d.x_test])
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1.0) < 1e-3


def test_matches_the_pinned_mnist1d_fingerprint(mnist1d):
    # the course's measured numbers depend on these exact arrays (mnist1d 0.0.2.post1, seed 42)
    assert mnist1d.y_train[:16].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5]
    assert mnist1d.y_test[:16].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7, 7, 1, 4, 6]
    torch.testing.assert_close(
        mnist1d.x_train[0, :4], torch.tensor([-0.3320057, -0.4719104, -0.7786971, -1.0097408])
    )


def test_writes_npz_loadable_without_pickle(mnist1d, mnist1d_cache_dir):
    with np.load(mnist1d_cache_dir / CACHE_NAME, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(data._KEYS)
        np.testing.assert_array_equal(npz["x_train"], mnist1d.x_train.numpy())


def test_leaves_no_temp_files(mnist1d, mnist1d_cache_dir):
    assert [p.name for p in mnist1d_cache_dir.iterdir()] == [CACHE_NAME]


def test_cache_hit_equals_fresh_generation(mnist1d, mnist1d_cache_dir, no_memo, monkeypatch):
    def fail(seed):
        raise AssertionError("a valid cache must not be regenerated")

    monkeypatch.setattr(data, "_generate", fail)
    assert_same(load_mnist1d(mnist1d_cache_dir), mnist1d)


def test_repeated_calls_use_the_memo(mnist1d, mnist1d_cache_dir, tmp_path, fake_generator):
    # the session fixture filled the memo: an empty dir is neither generated into nor read
    assert_same(load_mnist1d(tmp_path), mnist1d)
    assert fake_generator == []


def test_caller_cannot_corrupt_the_memo(mnist1d, mnist1d_cache_dir):
    first = load_mnist1d(mnist1d_cache_dir)
    first.x_train.zero_()
    first.y_test.fill_(-1)
    assert_same(load_mnist1d(mnist1d_cache_dir), mnist1d)


def test_loading_leaves_global_rng_state_unchanged(tmp_path, no_memo):
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    load_mnist1d(tmp_path)  # a real generation: mnist1d reseeds both global states inside
    assert random.random() == random.Random(123).random()
    assert np.random.random() == np.random.RandomState(123).random_sample()  # noqa: NPY002


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04truncated"])
def test_corrupt_cache_is_regenerated(tmp_path, no_memo, fake_generator, mnist1d, content):
    (tmp_path / CACHE_NAME).write_bytes(content)
    assert_same(load_mnist1d(tmp_path), mnist1d)
    assert len(fake_generator) == 1
    with np.load(tmp_path / CACHE_NAME, allow_pickle=False) as npz:  # and rewritten, valid
        np.testing.assert_array_equal(npz["y_test"], mnist1d.y_test.numpy())


def test_cache_with_wrong_shapes_is_regenerated(tmp_path, no_memo, fake_generator, mnist1d):
    np.savez(tmp_path / CACHE_NAME, **{k: np.zeros(3) for k in data._KEYS})
    assert_same(load_mnist1d(tmp_path), mnist1d)
    assert len(fake_generator) == 1


def test_env_var_sets_the_cache_dir(tmp_path, monkeypatch, no_memo, fake_generator):
    monkeypatch.setenv("BNCOURSE_CACHE_DIR", str(tmp_path / "env-cache"))
    assert data.default_cache_dir() == tmp_path / "env-cache"
    load_mnist1d()
    assert (tmp_path / "env-cache" / CACHE_NAME).is_file()


def test_unwritable_cache_dir_only_warns(tmp_path, no_memo, fake_generator, mnist1d):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not write"):
        assert_same(load_mnist1d(blocker / "cache"), mnist1d)


_CHILD = """
import hashlib, sys, time
import numpy as np
from bncourse import data

def generate(seed):  # the session's arrays instead of a 2-second generation; both processes
    time.sleep(0.3)  # "generate" at once, so both write the cache
    with np.load(sys.argv[2], allow_pickle=False) as npz:
        return {k: npz[k] for k in data._KEYS}

data._generate = generate
d = data.load_mnist1d(sys.argv[1])
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in d)).hexdigest())
"""


def _digest(d: MNIST1D) -> str:
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in d)).hexdigest()


def test_concurrent_processes_into_empty_dir_agree(tmp_path, mnist1d, mnist1d_cache_dir):
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(cache), str(mnist1d_cache_dir / CACHE_NAME)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert [out.strip() for out, _ in results] == [_digest(mnist1d)] * 2
    assert [p.name for p in cache.iterdir()] == [CACHE_NAME]  # no temp file left behind
    with np.load(cache / CACHE_NAME, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x_test"], mnist1d.x_test.numpy())


# --- batches ---------------------------------------------------------------------------------


def _toy(n: int, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """x[i] = (i, i): the examples' ids, to follow them through a batch order."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 2)  # (n, 2)
    y = torch.arange(n) % classes                                        # (n,)
    return x, y


@given(n=st.integers(1, 200), batch_size=st.integers(1, 200), seed=st.integers(0, 2**31 - 1),
       order=st.sampled_from(data.BATCH_ORDERS))
def test_batch_shapes_and_pairing(n, batch_size, seed, order):
    if batch_size > n:
        batch_size = n
    x, y = _toy(n)
    xb, yb = batches(x, y, batch_size, order=order, seed=seed)
    assert xb.shape == (n // batch_size, batch_size, 2)
    assert yb.shape == (n // batch_size, batch_size)
    ids = xb[..., 0].long()
    assert torch.equal(yb, ids % 10)  # each label stays with its example


@given(n=st.integers(1, 200), batch_size=st.integers(1, 200), seed=st.integers(0, 1000),
       order=st.sampled_from(data.BATCH_ORDERS))
def test_each_example_at_most_once_and_only_remainder_dropped(n, batch_size, seed, order):
    batch_size = min(batch_size, n)
    x, y = _toy(n)
    xb, _ = batches(x, y, batch_size, order=order, seed=seed)
    ids = xb[..., 0].long().flatten()
    assert len(set(ids.tolist())) == ids.numel() == n - n % batch_size


def test_iid_is_a_permutation_when_batch_size_divides(mnist1d):
    xb, yb = batches(mnist1d.x_train, mnist1d.y_train, 50, seed=3)
    flat = xb.reshape(-1, 40)
    assert sorted(flat.sum(1).tolist()) == sorted(mnist1d.x_train.sum(1).tolist())
    assert not torch.equal(flat, mnist1d.x_train)  # actually shuffled


def test_same_seed_same_batches_other_seed_other_batches():
    x, y = _toy(100)
    a, b, c = (batches(x, y, 10, seed=s)[0] for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_batches_do_not_touch_global_torch_rng():
    x, y = _toy(100)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    batches(x, y, 10, seed=5)
    assert torch.equal(torch.rand(3), expected)


MAX_CLASSES_PER_SORTED_BATCH = 2


def test_class_sorted_batches_hold_at_most_two_classes_in_label_order(mnist1d):
    _, yb = batches(mnist1d.x_train, mnist1d.y_train, 64, order="class_sorted", seed=0)
    classes = [set(b.tolist()) for b in yb]
    assert max(len(c) for c in classes) <= MAX_CLASSES_PER_SORTED_BATCH
    single = sum(len(c) == 1 for c in classes)
    assert single >= len(classes) - 9  # only batches at the 9 class borders mix
    assert torch.equal(yb.flatten(), yb.flatten().sort().values)


def test_class_sorted_shuffles_within_class():
    x, y = _toy(200)
    a = batches(x, y, 10, order="class_sorted", seed=1)[0]
    b = batches(x, y, 10, order="class_sorted", seed=2)[0]
    assert not torch.equal(a, b)
    assert torch.equal(a, batches(x, y, 10, order="class_sorted", seed=1)[0])


def test_batches_keep_trailing_dims():
    x, y = torch.randn(12, 3, 5), torch.zeros(12, dtype=torch.long)
    xb, yb = batches(x, y, 4)
    assert xb.shape == (3, 4, 3, 5) and yb.shape == (3, 4)


def test_drop_last_false_allowed_when_batch_size_divides():
    x, y = _toy(12)
    assert batches(x, y, 4, drop_last=False)[0].shape == (3, 4, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 11}, "batch_size"),
        ({"batch_size": 2, "order": "sorted"}, "order"),
        ({"batch_size": 3, "drop_last": False}, "drop_last"),
    ],
)
def test_bad_batch_arguments_raise(kwargs, match):
    x, y = _toy(10)
    with pytest.raises(ValueError, match=match):
        batches(x, y, **kwargs)


def test_a_batch_size_that_is_not_an_int_raises_type_error():
    x, y = _toy(10)
    with pytest.raises(TypeError, match="expected batch_size to be an int"):
        batches(x, y, 2.0)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match=r"expected x of shape \(N, \*\) and y of shape \(N,\)"):
        batches(torch.zeros(10, 2), torch.zeros(9, dtype=torch.long), 2)


# --- shifted test sets (notebook 09) ---------------------------------------------------------


def test_shifted_test_sets_are_deterministic_and_leave_the_global_rng_alone():
    import random

    from bncourse.data import shifted_test_set

    state = (random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002
    x1, y1 = shifted_test_set("noise", 0.5, n=200)
    x2, y2 = shifted_test_set("noise", 0.5, n=200)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (200, 40)
    assert random.getstate() == state[0]
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002


def test_a_stronger_noise_shift_makes_neighbouring_values_less_alike():
    from bncourse.data import shifted_test_set

    def roughness(x):                      # mean squared step between neighbours, per variance
        return ((x[:, 1:] - x[:, :-1]) ** 2).mean() / x.var()

    clean, _ = shifted_test_set("noise", 0.0, n=300)
    noisy, _ = shifted_test_set("noise", 2.0, n=300)
    assert roughness(noisy) > 1.5 * roughness(clean)


def test_the_gain_shift_scales_and_offsets_the_signals():
    from bncourse.data import shifted_test_set

    x0, y0 = shifted_test_set("gain", 0.0, n=100)
    x1, y1 = shifted_test_set("gain", 1.0, n=100)
    torch.testing.assert_close(x1, 2 * x0 + 1)
    assert torch.equal(y0, y1)


@pytest.mark.parametrize(("args", "phrase"), [(("blur", 1.0), "expected shift to be one of"),
                                              (("noise", -1.0), "expected strength >= 0")])
def test_bad_shift_arguments_raise(args, phrase):
    from bncourse.data import shifted_test_set

    with pytest.raises(ValueError, match=phrase):
        shifted_test_set(*args)


def test_the_translation_shift_moves_the_patterns():
    from bncourse.data import shifted_test_set

    x0, _ = shifted_test_set("translation", 0.0, n=200)
    x1, _ = shifted_test_set("translation", 1.0, n=200)
    assert (x1 - x0).abs().mean() > 0.5
