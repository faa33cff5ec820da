"""The GIL-free BLAS/LAPACK routines of the bootstrap (fidkit.metrics._lapack) against numpy, and the threads that
run bootstrap resamples concurrently."""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fidkit.errors import InputError
from fidkit.metrics import bootstrap_fid

lapack = importlib.import_module("fidkit.metrics._lapack")
resample_module = importlib.import_module("fidkit.metrics._fid_resample")


def spd(seed: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((3 * dim, dim)) * np.linspace(1.0, 0.1, dim)
    return np.asfortranarray(rows.T @ rows / (3 * dim))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_syrk_adds_the_weighted_gram_to_the_lower_triangle(dtype, rtol):
    rows = np.random.default_rng(0).standard_normal((70, 12)).astype(dtype)
    gram = np.asfortranarray(np.triu(np.ones((12, 12), dtype=dtype), 1))  # the upper triangle must be left alone
    lapack.syrk_lower(3.0, rows, gram)
    lapack.syrk_lower(1.0, rows[:0], gram)  # no rows: nothing added
    expected = 3.0 * rows.astype(np.float64).T @ rows.astype(np.float64)
    np.testing.assert_allclose(np.tril(gram), np.tril(expected), rtol=rtol, atol=rtol * np.abs(expected).max())
    np.testing.assert_array_equal(np.triu(gram, 1), np.triu(np.ones((12, 12)), 1))


def test_cholesky_triangular_product_and_eigenvalues_give_the_spectrum_of_the_product():
    """lean_fid's steps by hand: R_a, R_b, B = R_b^T R_a, the eigenvalues of B B^T = those of S_a S_b."""
    sigma_a, sigma_b = spd(1, 40), spd(2, 40)
    factor_a, factor_b = sigma_a.copy(order="F"), sigma_b.copy(order="F")
    assert lapack.cholesky_lower(factor_a) == lapack.cholesky_lower(factor_b) == 0
    np.testing.assert_allclose(np.tril(factor_a), np.linalg.cholesky(sigma_a), rtol=0, atol=1e-14)
    product = np.asfortranarray(np.tril(factor_a))
    factor_b[np.triu_indices(40, 1)] = np.nan  # the strict upper triangle of the triangular factor is not read
    lapack.triangular_transpose_times(factor_b, product)
    np.testing.assert_allclose(product, np.linalg.cholesky(sigma_b).T @ np.linalg.cholesky(sigma_a), atol=1e-14)
    gram = np.zeros((40, 40), order="F")
    lapack.syrk_lower(1.0, product.T, gram)
    values, info = lapack.eigenvalues_lower(gram)
    assert info == 0
    expected = np.sort(np.linalg.eigvals(sigma_a @ sigma_b).real)
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-14 * expected.max())


def test_empty_matrices_are_left_alone():
    """Size 0 (never reached through the public functions): no call into LAPACK, which would refuse lda = 0."""
    empty = np.zeros((0, 0), order="F")
    assert lapack.cholesky_lower(empty) == 0
    assert lapack.eigenvalues_lower(empty)[0].shape == (0,)
    lapack.triangular_transpose_times(empty, empty.copy(order="F"))
    lapack.syrk_lower(1.0, np.zeros((3, 0)), empty)


def test_cholesky_reports_a_matrix_that_is_not_positive_definite():
    matrix = np.asfortranarray(np.diag([1.0, -1.0, 2.0]))
    assert lapack.cholesky_lower(matrix) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: lapack.cholesky_lower(np.ones((3, 3))),  # C order
        lambda: lapack.cholesky_lower(np.ones((3, 3), dtype=np.float32, order="F")),
        lambda: lapack.cholesky_lower(np.ones((3, 4), order="F")),
        lambda: lapack.eigenvalues_lower(np.ones((2, 2), order="F")[:, :1]),
        lambda: lapack.triangular_transpose_times(np.eye(3, order="F"), np.eye(2, order="F")),
        lambda: lapack.syrk_lower(1.0, np.ones((4, 3), dtype=np.float16), np.zeros((3, 3), np.float16, order="F")),
        lambda: lapack.syrk_lower(1.0, np.ones((4, 3), order="F"), np.zeros((3, 3), order="F")),
        lambda: lapack.syrk_lower(1.0, np.ones((4, 3), dtype=np.float32), np.zeros((3, 3), order="F")),
    ],
)
def test_a_wrong_layout_is_refused_before_lapack_sees_it(call):
    with pytest.raises(ValueError):
        call()


def test_threads_get_the_numbers_of_one_thread():
    """Eight eigensolves in four threads at once: each equal to the same call made alone (the ctypes calls run
    without the GIL, so they really overlap; the workspace query is shared)."""
    matrices = [spd(seed, 150) for seed in range(8)]
    alone = [lapack.eigenvalues_lower(matrix.copy(order="F"))[0] for matrix in matrices]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda matrix: lapack.eigenvalues_lower(matrix.copy(order="F"))[0], matrices))
    for one, other in zip(alone, together):
        np.testing.assert_array_equal(one, other)


# --- LAPACK's two-stage eigensolver --------------------------------------------------------------------------------

# SciPy's wheels bring their OpenBLAS in scipy.libs (numpy's own, libscipy_openblas64_, lives in numpy.libs).
SCIPY_OPENBLAS = any("scipy.libs" in entry.get("filepath", "") for entry in threadpool_info())


@pytest.mark.skipif(not SCIPY_OPENBLAS, reason="SciPy without its OpenBLAS wheel library: dsyevd_2stage may be absent")
def test_the_two_stage_eigensolver_is_found_beside_scipys_dsyevd():
    """SciPy's wheels (LAPACK >= 3.7 inside their OpenBLAS) have it: the one CI and most users run."""
    assert lapack.two_stage_available()


@pytest.fixture
def two_stage():
    if not lapack.two_stage_available():
        pytest.skip("no dsyevd_2stage in this LAPACK")


@pytest.mark.parametrize("dim", [1, 2, 33, 130])
def test_two_stage_eigenvalues_equal_dsyevd(two_stage, dim):
    """Same spectrum to round-off, for positive definite and indefinite matrices (the upper triangle is not read)."""
    rng = np.random.default_rng(dim)
    for matrix in (spd(dim, dim), np.asfortranarray(rng.standard_normal((dim, dim)) + 5.0)):
        matrix = np.asfortranarray(matrix + matrix.T)
        expected = np.linalg.eigvalsh(matrix)
        poisoned = matrix.copy(order="F")
        poisoned[np.triu_indices(dim, 1)] = np.nan
        values, info = lapack.eigenvalues_lower(poisoned, two_stage=True)
        assert info == 0
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_two_stage_in_threads_gives_the_numbers_of_one_thread(two_stage):
    matrices = [spd(seed, 150) for seed in range(6)]
    alone = [lapack.eigenvalues_lower(matrix.copy(order="F"), two_stage=True)[0] for matrix in matrices]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda m: lapack.eigenvalues_lower(m.copy(order="F"), two_stage=True)[0], matrices))
    for one, other in zip(alone, together):
        np.testing.assert_array_equal(one, other)


@pytest.fixture
def fresh_two_stage(monkeypatch):
    """The process-wide finding of dsyevd_2stage forgotten for the test (and restored after it)."""
    monkeypatch.setattr(lapack, "_TWO_STAGE", {})


def test_a_library_without_the_routine_means_dsyevd(fresh_two_stage, monkeypatch):
    monkeypatch.setattr(lapack, "_NAME_PATTERNS", ("no_such_prefix_{}_",))
    assert not lapack.two_stage_available()
    with pytest.raises(RuntimeError, match="dsyevd_2stage is not available"):
        lapack.eigenvalues_lower(spd(1, 5), two_stage=True)
    assert lapack.eigenvalues_lower(spd(1, 5))[1] == 0


def test_a_routine_that_disagrees_with_dsyevd_is_not_used(two_stage, fresh_two_stage, monkeypatch):
    """The check at first use compares with dsyevd: a binding that gave other numbers would be refused."""
    monkeypatch.setattr(lapack, "_agrees_with_dsyevd", lambda: False)
    assert not lapack.two_stage_available()


def test_threads_use_the_two_stage_solver_when_asked_and_one_at_a_time_dsyevd(two_stage, monkeypatch):
    """By default every route uses dsyevd; with ``two_stage_in_threads`` the worker threads (BLAS single-threaded)
    use the two-stage reduction and the first resample, alone in the caller with BLAS's threads, dsyevd. The values
    agree to round-off."""
    import threading

    a, b = features(1, 600, 20), features(2, 500, 20, 0.1)
    used, eigenvalues = [], resample_module.eigenvalues_lower

    def recording(matrix, two_stage=False):
        used.append((threading.current_thread() is threading.main_thread(), two_stage))
        return eigenvalues(matrix, two_stage=two_stage)

    monkeypatch.setattr(resample_module, "eigenvalues_lower", recording)
    draws = [resample_module.resample_counts(np.random.default_rng(seed), 600, 500) for seed in range(5)]
    values = {}
    for two_stage_in_threads in (False, True):
        used.clear()
        resampler = resample_module.Resampler(a, b, "float32", None)
        resampler.two_stage_in_threads = two_stage_in_threads
        values[two_stage_in_threads] = resampler.fids(draws, workers=2)
        assert sorted(used) == [(False, two_stage_in_threads)] * 4 + [(True, False)]
    np.testing.assert_allclose(values[True], values[False], rtol=1e-12)
    used.clear()
    bootstrap_fid(a, b, n_resamples=3, seed=3, device=None, workers=2)
    assert all(not two_stage for _, two_stage in used)


def features(seed: int, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * np.linspace(1.0, 0.3, dim) + shift).astype(np.float32)


def blas_threads_now() -> list[int]:
    return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]


def test_resampled_values_do_not_depend_on_the_workers():
    """One at a time (BLAS's own threads) or 2 or 3 at a time in threads: the same values to round-off, by the same
    routes; and BLAS gets its threads back afterwards."""
    a, b = features(1, 900, 24), features(2, 700, 24, 0.1)
    before = blas_threads_now()
    results = {
        workers: bootstrap_fid(a, b, n_resamples=9, seed=5, device=None, workers=workers) for workers in (1, 2, 3)
    }
    assert blas_threads_now() == before
    for workers in (2, 3):
        np.testing.assert_allclose(results[workers].values, results[1].values, rtol=1e-12)
        assert results[workers].route == results[1].route == "weighted-moments: float32 9"


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "4"])
def test_workers_must_be_a_positive_integer(workers):
    a, b = features(1, 50, 4), features(2, 50, 4)
    with pytest.raises(InputError, match="workers"):
        bootstrap_fid(a, b, n_resamples=3, device=None, workers=workers)


def test_a_later_resample_too_close_to_singular_is_redone_in_float64_alone(monkeypatch):
    """The first resample decides that float32 Grams serve the data; a later one whose check fails (simulated: the
    third float32 attempt) is recomputed in float64, and only that one."""
    a, b = features(3, 400, 10), features(4, 300, 10, 0.2)
    lean_fid, float32_calls = resample_module.lean_fid, []

    def failing_third(difference, sigma_a, sigma_b, min_ratio, two_stage=False):
        if min_ratio == resample_module._MIN_RATIO["float32"]:
            float32_calls.append(1)
            if len(float32_calls) == 3:
                return None, 1e-6
        return lean_fid(difference, sigma_a, sigma_b, min_ratio, two_stage)

    monkeypatch.setattr(resample_module, "lean_fid", failing_third)
    mixed = bootstrap_fid(a, b, n_resamples=5, seed=2, device=None, workers=1)
    exact = bootstrap_fid(a, b, n_resamples=5, seed=2, device=None, dtype="float64", workers=1)
    assert mixed.route == "weighted-moments: float32 4, float64 1"
    np.testing.assert_allclose(mixed.values, exact.values, rtol=1e-6)
    assert mixed.values[2] == pytest.approx(exact.values[2], rel=1e-12)


def test_an_error_in_a_worker_reaches_the_caller_and_stops_the_queue(monkeypatch):
    """A resample that raises (here: the fourth) surfaces as the error it is; resamples still queued are not run."""
    a, b = features(5, 300, 8), features(6, 300, 8, 0.1)
    calls, lean = [], resample_module.Resampler._lean

    def failing(self, counts_a, counts_b, exact, two_stage):
        calls.append(1)
        if len(calls) == 4:
            raise MemoryError("simulated")
        return lean(self, counts_a, counts_b, exact, two_stage)

    monkeypatch.setattr(resample_module.Resampler, "_lean", failing)
    with pytest.raises(MemoryError, match="simulated"):
        bootstrap_fid(a, b, n_resamples=200, seed=1, device=None, workers=2)
    assert len(calls) < 200


def test_blas_is_single_threaded_in_every_worker(monkeypatch):
    """Each worker sees one BLAS thread (set in the worker too: an OpenMP build's limit is per thread)."""
    import threading

    a, b = features(7, 300, 16), features(8, 200, 16, 0.1)
    seen_in_workers, cpu_fid = [], resample_module.Resampler._cpu_fid

    def recording_cpu_fid(self, counts_a, counts_b, two_stage=False):
        if threading.current_thread() is not threading.main_thread():
            seen_in_workers.append(max(blas_threads_now(), default=1))
        return cpu_fid(self, counts_a, counts_b, two_stage)

    monkeypatch.setattr(resample_module.Resampler, "_cpu_fid", recording_cpu_fid)
    bootstrap_fid(a, b, n_resamples=6, seed=1, device=None, workers=2)
    assert len(seen_in_workers) == 5 and set(seen_in_workers) == {1}  # the first resample runs in the caller


def test_singular_resamples_run_in_the_caller_one_at_a_time(monkeypatch):
    """Where the first resample needs frechet_distance (N < dim: every covariance singular), all run in the calling
    thread with BLAS's own threads: frechet_distance may run torch and sets warning filters."""
    import threading

    a, b = features(7, 12, 16), features(8, 14, 16, 0.1)
    frechet_threads, frechet = [], resample_module.frechet_distance

    def recording_frechet(*args, **kwargs):
        frechet_threads.append(threading.current_thread() is threading.main_thread())
        return frechet(*args, **kwargs)

    monkeypatch.setattr(resample_module, "frechet_distance", recording_frechet)
    with pytest.warns(UserWarning):  # the small-sample warning of the point value
        result = bootstrap_fid(a, b, n_resamples=6, seed=1, device=None, workers=2)
    assert result.route == "weighted-moments: frechet_distance 6"
    assert frechet_threads == [True] * 6


def test_where_blas_threads_cannot_be_limited_the_resamples_run_one_at_a_time(monkeypatch, caplog):
    """Another thread holding threadpoolctl's control of a pthreads OpenBLAS makes the limit a no-op (simulated):
    no workers, rather than workers x BLAS threads fighting over the cores; the same values."""
    import logging

    a, b = features(9, 300, 12), features(10, 250, 12, 0.2)
    expected = bootstrap_fid(a, b, n_resamples=5, seed=3, device=None, workers=1)
    monkeypatch.setattr(resample_module, "blas_threads", lambda: 4)
    monkeypatch.setattr(resample_module, "ThreadPoolExecutor", None)  # would fail if used
    with caplog.at_level(logging.INFO, logger="fidkit.metrics"):
        result = bootstrap_fid(a, b, n_resamples=5, seed=3, device=None, workers=3)
    assert result.values == expected.values
    assert any("could not be set to one" in message for message in caplog.messages)


def test_overlapping_bootstraps_give_blas_its_threads_back():
    """Two bootstrap_fid calls in two threads at once: one threaded run at a time, and BLAS's thread count is what
    it was once both have returned (each restoring the limit it found would leave it at one otherwise)."""
    a, b = features(11, 3000, 48), features(12, 2000, 48, 0.1)

    def run(seed: int):
        return bootstrap_fid(a, b, n_resamples=12, seed=seed, device=None, workers=2)

    before = blas_threads_now()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [1, 1]))
    assert blas_threads_now() == before
    np.testing.assert_allclose(results[0].values, results[1].values, rtol=1e-12)


def test_a_routine_whose_signature_changed_is_refused_at_import():
    """The bindings check SciPy's exported C signature exactly (a 64-bit integer or another argument would
    otherwise be passed as the wrong thing): a mismatch is an ImportError naming the routine."""
    with pytest.raises(ImportError, match="dpotrf"):
        lapack._bind(lapack.cython_lapack, "dpotrf", lapack._CHAR, lapack._INT, lapack._D, lapack._INT)
    with pytest.raises(ImportError, match="ssyrk"):
        lapack._bind(lapack.cython_blas, "ssyrk", *[lapack._CHAR] * 2, *[lapack._INT] * 2, *[lapack._D] * 2,
                     lapack._INT, *[lapack._D] * 2, lapack._INT)
