"""The compiled engine computes what the NumPy engine computes.

Outputs and gradients of :class:`CompiledEngine` against :class:`FastGRNNEngine`
(the reference, itself checked by finite differences in test_gradients.py) over
every pair of non-linearities, readout, rank and dtype, on padded batches with
length-1 sequences, B = 1, T = 1, saturating and non-finite input, with a
low-rank ``W`` applied as ``W1 @ W2`` or as its factors; batches read in place
(StepRows) against the same batch copied; its tanh; the fallback without a
compiler and the cache shared by processes.
"""

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sklearn_fastgrnn._build import BuildError, address, find_compiler
from sklearn_fastgrnn._cell import (
    READOUTS,
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    to_time_major,
)
from sklearn_fastgrnn._compiled_cell import (
    ENGINES,
    CompiledEngine,
    StepRows,
    load_library,
    make_engine,
    trains_as_factors,
)
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES, scalar_sigmoid

from .conftest import needs_compiler

PAIRS = list(itertools.product(sorted(NONLINEARITIES), repeat=2))
DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-10, np.float32: 1e-5}
# a low-rank W as its factors rounds in another order than the NumPy engine's
# x (W1 @ W2): over 8 seeds of every pair and readout, float32, it was at most
# 7e-5 from the float64 results (NumPy's own: 1.5e-3) and needed 5e-5 here,
# as the compiled W1 @ W2 does on other draws than this file's
FACTORED_RTOL = {np.float64: 1e-10, np.float32: 1e-4}
# name: ((w_rank, u_rank), inputs); a low-rank W of 12 inputs runs as its factors
RANKS = {"full": ((None, None), 3), "low-rank": ((2, 3), 3), "factored": ((2, 3), 12)}
FACTORED = RANKS["factored"]


def _batch(rng, n, T, d, lengths=None, scale=1.0):
    X = scale * rng.standard_normal((n, T, d))
    if lengths is not None:
        for i, length in enumerate(lengths):
            X[i, length:] = np.nan
    return X


def _params(rng, layout, spread=0.3):
    flat = init_parameters(layout, np.random.RandomState(0), 1.0, -4.0, np.float64)
    return flat + spread * rng.standard_normal(flat.size)


def _run(engine, flat, Xa, lengths, doutputs):
    # the NumPy engine computes padded steps too, which may overflow (as fit does)
    with np.errstate(over="ignore", invalid="ignore"):
        outputs = engine.forward(flat, Xa, lengths).copy()
        grad = engine.backward(doutputs, np.empty_like(flat)).copy()
    return outputs, grad


def assert_same(layout, expected, got, rtol, exact=None):
    """Outputs, and every parameter's gradient, equal relative to its largest entry.

    With ``exact`` (the float64 results of the same float32 numbers), a float32
    difference may also reach the NumPy engine's own distance from them (``zeta``'s
    gradient is a difference of two sums, which cancel when the gate is near 1),
    or the compiled result may be as close to them as the NumPy one, give or take
    ``rtol`` (a low-rank ``W`` applied as its factors rounds in another order).
    """
    (out_a, grad_a), (out_b, grad_b) = expected, got
    assert out_b.dtype == out_a.dtype
    pairs = [("outputs", out_a, out_b, None if exact is None else exact[0])]
    views = [layout.views(g) for g in (grad_a, grad_b)]
    exact_views = None if exact is None else layout.views(exact[1])
    for key in layout.shapes:
        pairs.append((key, views[0][key], views[1][key],
                      None if exact is None else exact_views[key]))
    for key, a, b, e in pairs:
        scale = max(np.abs(a).max(), 1e-30)
        own = 0.0 if e is None else np.abs(a - e).max() / scale
        err = np.abs(a - b).max() / scale
        if e is not None and err > rtol + own:  # then: as accurate as the NumPy engine
            err = np.abs(b - e).max() / scale
        assert err <= rtol + own, f"{key}: relative difference {err:.1e} (own {own:.1e})"


def compare(rng, dtype, gate, update, readout, ranks=(None, None), n=7, T=9, d=3, H=6,
            C=3, lengths=None, scale=1.0, spread=0.3, factor_low_rank=None):
    layout = ParameterLayout(d, H, C, *ranks)
    flat = _params(rng, layout, spread).astype(dtype)
    scale *= min(1.0, np.sqrt(3 / d))  # more inputs: x W as large as with 3
    Xa = to_time_major(_batch(rng, n, T, d, lengths, scale), dtype)
    doutputs = rng.standard_normal((n, C)).astype(dtype)
    expected = _run(FastGRNNEngine(layout, gate, update, dtype, readout), flat, Xa,
                    lengths, doutputs)
    got = _run(CompiledEngine(layout, gate, update, dtype, readout,
                              factor_low_rank=factor_low_rank), flat, Xa, lengths, doutputs)
    exact = None
    if dtype == np.float32:
        exact = _run(FastGRNNEngine(layout, gate, update, np.float64, readout),
                     flat.astype(np.float64), Xa.astype(np.float64), lengths,
                     doutputs.astype(np.float64))
    return layout, expected, got, exact


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("gate, update", PAIRS)
def test_every_configuration_equals_the_numpy_engine(rng, dtype, gate, update):
    """Every pair x readout x rank, on a padded batch of 7 (blocks of 4 rows and
    a rest) with a length-1 sequence and ties."""
    lengths = np.array([9, 1, 5, 9, 3, 5, 8])
    configurations = [*itertools.product(READOUTS, [RANKS["full"], RANKS["low-rank"]]),
                      *((readout, FACTORED) for readout in READOUTS)]
    for readout, (ranks, d) in configurations:
        layout, expected, got, exact = compare(rng, dtype, gate, update, readout, ranks,
                                               d=d, lengths=lengths)
        rtol = (FACTORED_RTOL if (ranks, d) == FACTORED else RTOL)[dtype]
        assert_same(layout, expected, got, rtol, exact)


@needs_compiler
def test_a_low_rank_w_runs_as_its_factors_where_they_cost_less():
    """The engine's ``factored`` and ``step_inputs`` follow ``trains_as_factors``."""
    for (ranks, d), factored in zip(RANKS.values(), [False, False, True]):
        engine = CompiledEngine(ParameterLayout(d, 6, 3, *ranks), "sigmoid", "tanh",
                                np.float64)
        assert engine.factored is factored
        assert engine.step_inputs == (ranks[0] if factored else d)


@pytest.mark.parametrize("d, H, r, factored", [
    (54, 32, 8, True), (81, 32, 8, True), (261, 32, 8, True), (360, 64, 16, True),
    (54, 64, 16, True),  # PLAID's default model: 0.89 of the product's work
    (30, 64, 16, False),  # 1.01 of it
    (12, 6, 2, True), (3, 6, 2, False), (40, 32, 32, False), (100, 16, None, False),
])
def test_the_factors_are_chosen_by_their_multiply_adds(d, H, r, factored):
    """Factors at most 0.95 of the product's multiply-adds a row and step
    (FACTORED_COST): the suite's long sets (Coffee, OSULeaf, ACSF1, PigCVP,
    PLAID), not a rank that saves too little or nothing, never full rank."""
    assert trains_as_factors(d, H, r) is factored


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("factor", [True, False])
def test_factoring_can_be_forced_either_way(rng, dtype, factor):
    """``factor_low_rank`` overrides the rule: both ways compute the NumPy
    engine's results, with a full-rank U and a low-rank one."""
    for ranks, d in [((2, None), 3), ((2, 3), 12), ((None, None), 3)]:
        layout, expected, got, exact = compare(
            rng, dtype, "sigmoid", "tanh", "last", ranks, d=d,
            lengths=np.array([9, 1, 5, 9, 3, 5, 8]), factor_low_rank=factor,
        )
        assert_same(layout, expected, got, FACTORED_RTOL[dtype], exact)
        engine = CompiledEngine(layout, "sigmoid", "tanh", dtype, factor_low_rank=factor)
        assert engine.factored is (factor and ranks[0] is not None)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize(
    "n, T, lengths",
    [(1, 1, None), (1, 6, None), (1, 6, [2]), (5, 1, None), (3, 4, [1, 1, 1])],
    ids=["B=1,T=1", "B=1", "B=1-padded", "T=1", "all-length-1"],
)
@pytest.mark.parametrize("rank", ["full", "factored"])
def test_edge_shapes(rng, dtype, readout, n, T, lengths, rank):
    lengths = None if lengths is None else np.array(lengths)
    ranks, d = RANKS[rank]
    layout, expected, got, exact = compare(rng, dtype, "sigmoid", "tanh", readout, ranks,
                                           n=n, T=T, d=d, lengths=lengths)
    assert_same(layout, expected, got, (FACTORED_RTOL if rank == "factored" else RTOL)[dtype],
                exact)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("H, d", [(17, 2), (64, 3), (70, 1)])
def test_other_sizes(rng, dtype, H, d):
    """Hidden sizes that are not a multiple of the vector width or of the tiles,
    64 (the size of "auto" for many classes) and above 64 (blocks of 2 rows)."""
    lengths = np.array([12, 4, 12, 1, 7, 12, 9, 2, 11])
    for readout in READOUTS:
        layout, expected, got, exact = compare(rng, dtype, "sigmoid", "tanh", readout, (None, 4),
                                        n=9, T=12, d=d, H=H, lengths=lengths)
        assert_same(layout, expected, got, RTOL[dtype], exact)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("gate, update", [("sigmoid", "tanh"), ("tanh", "sigmoid"),
                                          ("quant_sigmoid", "quant_tanh")])
def test_saturating_inputs(rng, dtype, gate, update):
    """Inputs 30x larger than usual drive every unit into its flat zones."""
    for readout, (ranks, d) in itertools.product(READOUTS, [RANKS["full"], FACTORED]):
        layout, expected, got, exact = compare(rng, dtype, gate, update, readout, ranks,
                                               d=d, scale=30.0,
                                               lengths=np.array([9, 2, 9, 4, 9, 6, 1]))
        rtol = (FACTORED_RTOL if (ranks, d) == FACTORED else RTOL)[dtype]
        assert_same(layout, expected, got, rtol, exact)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, "max"])
@pytest.mark.parametrize("rank", ["full", "factored"])
def test_non_finite_values_stay_non_finite(rng, dtype, readout, bad, rank):
    """An infinity, a NaN inside a sequence or a value that overflows gives the
    NumPy engine's non-finite outputs and gradient entries, never a finite answer."""
    bad = np.finfo(dtype).max if bad == "max" else bad
    w_rank, d = {"full": (None, 2), "factored": (2, 12)}[rank]
    n, T, H, C = 5, 6, 6, 3
    layout = ParameterLayout(d, H, C, w_rank)
    flat = _params(rng, layout).astype(dtype)
    X = _batch(rng, n, T, d, [6, 3, 6, 2, 6])
    X[2, 3, 1] = bad  # sample 2 only
    Xa = to_time_major(X, dtype)
    Xa[3, 2, 1] = bad  # to_time_major turns NaN into 0: put it back
    lengths = np.array([6, 3, 6, 2, 6])
    doutputs = rng.standard_normal((n, C)).astype(dtype)
    expected = _run(FastGRNNEngine(layout, "relu", "tanh", dtype, readout), flat, Xa,
                    lengths, doutputs)
    got = _run(CompiledEngine(layout, "relu", "tanh", dtype, readout), flat, Xa,
               lengths, doutputs)
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    # something became non-finite (outputs or gradient: a max readout may pass by)
    assert not all(np.isfinite(a).all() for a in expected)
    finite = np.isfinite(expected[0])
    np.testing.assert_allclose(got[0][finite], expected[0][finite], rtol=RTOL[dtype])
    assert finite.any()  # the other samples keep finite outputs


@needs_compiler
def test_long_float32_sequences_stay_close(rng):
    """T = 1460 in float32: outputs and gradients within 1e-5 of the NumPy engine's,
    relative, beyond the NumPy engine's own float32 rounding (its distance from
    the same numbers in float64, a few 1e-5 on such sequences)."""
    lengths = np.array([1460, 700, 1460, 1])
    for readout in READOUTS:
        layout, expected, got, exact = compare(rng, np.float32, "sigmoid", "tanh", readout,
                                               n=4, T=1460, d=1, H=16, lengths=lengths)
        assert_same(layout, expected, got, 1e-5, exact)
        # and no farther from float64 than the NumPy engine, give or take 1e-5
        own = np.abs(expected[0] - exact[0]).max()
        assert np.abs(got[0] - exact[0]).max() <= 1e-5 * np.abs(exact[0]).max() + own


@needs_compiler
def test_the_factors_gradient_is_summed_in_float64(rng):
    """dW1 of a low-rank W as its factors, summed over 40,000 float32 steps, is
    within 1e-6 of the same numbers' float64 gradient, relative: its sums go to
    float64 every 256 rows (measured 0.8e-7 to 2.6e-7 over 6 seeds; summed in
    float32 throughout, 1.8e-6 to 4.6e-6); the other gradients as the NumPy
    engine's, give or take 1e-5."""
    ranks, d = FACTORED
    layout, expected, got, exact = compare(rng, np.float32, "sigmoid", "tanh", "mean", ranks,
                                           n=8, T=5000, d=d, H=6)
    for key in layout.shapes:
        a, b, e = (layout.views(run[1])[key] for run in (expected, got, exact))
        scale = np.abs(e).max()
        assert np.abs(b - e).max() <= 1e-5 * scale + np.abs(a - e).max(), key
    dW1 = [layout.views(run[1])["W1"] for run in (got, exact)]
    assert np.abs(dW1[0] - dW1[1]).max() <= 1e-6 * np.abs(dW1[1]).max()


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("readout", READOUTS)
def test_readout_state_and_threads(rng, dtype, readout):
    """The prediction path equals the NumPy engine's; a batch split over 2 and 3
    threads gives the gradient of 1 thread, with a low-rank W as its factors too."""
    for ranks, d in (RANKS["full"], FACTORED):
        _readout_state_and_threads(rng, dtype, readout, ParameterLayout(d, 6, 2, *ranks))


def _readout_state_and_threads(rng, dtype, readout, layout):
    n, T, d, C = 11, 8, layout.n_inputs, layout.n_outputs
    flat = _params(rng, layout).astype(dtype)
    lengths = rng.integers(1, T + 1, n)
    Xa = to_time_major(_batch(rng, n, T, d, lengths), dtype)
    params = layout.views(flat)
    reference = FastGRNNEngine(layout, "sigmoid", "tanh", dtype, readout)
    _, U, P = reference.stacked_weights(params)
    sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
    compiled = CompiledEngine(layout, "sigmoid", "tanh", dtype, readout)
    np.testing.assert_allclose(
        compiled.readout_state(Xa, P, U, sz, sn, lengths),
        reference.readout_state(Xa, P, U, sz, sn, lengths), rtol=RTOL[dtype], atol=1e-7,
    )
    doutputs = rng.standard_normal((n, C)).astype(dtype)
    one = _run(compiled, flat, Xa, lengths, doutputs)
    for threads in (2, 3):
        split = CompiledEngine(layout, "sigmoid", "tanh", dtype, readout, n_threads=threads)
        assert_same(layout, one, _run(split, flat, Xa, lengths, doutputs), RTOL[dtype])


def _windows_in_place(rng, dtype, n, T, k, c, lengths):
    """Sequences (n, L, c) of one array, a batch of windows of ``k`` timesteps
    cut from them at random starts, as the copied time-major array training
    used to make and as StepRows over the same array."""
    L = T * k + 5
    E = rng.standard_normal((n + 2, L, c)).astype(dtype)
    idx = rng.permutation(n + 2)[:n]
    starts = rng.integers(0, L - T * k + 1, n)
    Xa = np.ones((T, n, k * c + 1), dtype)
    for b in range(n):
        for t in range(T):
            Xa[t, b, :-1] = E[idx[b], starts[b] + t * k:starts[b] + (t + 1) * k].ravel()
        Xa[lengths[b]:, b, :-1] = np.nan  # padded steps: not read
    rows = StepRows(E, (idx * L + starts) * c, k * c, Xa.shape)
    return Xa, rows


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("rank", ["full", "factored"])
@pytest.mark.parametrize("threads", [1, 2])
def test_windows_read_in_place_equal_the_copied_batch(rng, dtype, rank, threads):
    """A batch given as StepRows (the windows where they lie in the array of
    sequences) gives the outputs and gradients of the same batch copied into a
    time-major array, to the bit: padded, 7 rows (not a multiple of the row
    blocks), with W full or as its factors, on 1 and 2 threads."""
    (w_rank, u_rank), d = RANKS[rank]
    k, c = (4, 3) if rank == "factored" else (1, 3)
    layout = ParameterLayout(k * c, 6, 3, w_rank, u_rank)
    assert d == k * c
    flat = _params(rng, layout).astype(dtype)
    lengths = np.array([9, 1, 5, 9, 3, 5, 8])
    Xa, rows = _windows_in_place(rng, dtype, 7, 9, k, c, lengths)
    doutputs = rng.standard_normal((7, 3)).astype(dtype)
    engine = CompiledEngine(layout, "sigmoid", "tanh", dtype, "mean", n_threads=threads)
    assert engine.factored is (rank == "factored")
    copied = _run(engine, flat, Xa, lengths, doutputs)
    in_place = _run(engine, flat, rows, lengths, doutputs)
    for a, b in zip(copied, in_place):
        np.testing.assert_array_equal(a, b)


@needs_compiler
def test_step_rows_outside_their_array_or_of_another_dtype_are_refused(rng):
    layout = ParameterLayout(12, 6, 3, 2, 3)
    flat = _params(rng, layout)
    lengths = np.full(5, 4)
    _, rows = _windows_in_place(rng, np.float64, 5, 4, 4, 3, lengths)
    engine = CompiledEngine(layout, "sigmoid", "tanh", np.float64)
    beyond = rows._replace(bases=rows.bases + rows.data.size - 12)
    before = rows._replace(bases=rows.bases - rows.bases.max() - 1)
    for bad in (beyond, before):
        with pytest.raises(ValueError, match="outside their array"):
            engine.forward(flat, bad, lengths)
    for bad in (rows._replace(data=rows.data.astype(np.float32)),
                rows._replace(bases=rows.bases.astype(np.int32)),
                rows._replace(shape=(4, 5, 10))):
        with pytest.raises(ValueError, match="StepRows must hold"):
            engine.forward(flat, bad, lengths)


@needs_compiler
def test_buffers_follow_the_batch_size_and_length(rng):
    """Batches of other sizes and lengths in turn give the results of a fresh engine."""
    for (ranks, d) in (RANKS["full"], FACTORED):
        layout = ParameterLayout(d, 6, 3, *ranks)
        flat = _params(rng, layout)
        engine = CompiledEngine(layout, "sigmoid", "tanh", np.float64, "mean")
        for n, T in [(5, 4), (8, 9), (5, 9), (8, 2)]:
            lengths = rng.integers(1, T + 1, n)
            Xa = to_time_major(_batch(rng, n, T, d, lengths), np.float64)
            doutputs = rng.standard_normal((n, 3))
            fresh = CompiledEngine(layout, "sigmoid", "tanh", np.float64, "mean")
            expected = _run(fresh, flat, Xa, lengths, doutputs)
            got = _run(engine, flat, Xa, lengths, doutputs)
            for a, b in zip(expected, got):
                np.testing.assert_array_equal(a, b)


@needs_compiler
@pytest.mark.parametrize("dtype, ulps", [(np.float64, 4), (np.float32, 3)])
def test_tanh_is_accurate_and_keeps_ieee_special_values(dtype, ulps):
    library = load_library(dtype, 6, 3)
    x = np.concatenate([
        np.linspace(-12, 12, 20001), np.geomspace(1e-30, 30, 2001),
        -np.geomspace(1e-30, 30, 2001), [0.0, 1e-45, 40.0, -40.0, np.finfo(dtype).max],
    ]).astype(dtype)
    y = np.empty_like(x)
    library.fg_tanh_array(x.ctypes.data, y.ctypes.data, x.size)
    exact = np.tanh(x.astype(np.longdouble))
    error = np.abs(y - exact) / np.spacing(np.abs(exact).astype(dtype))
    assert error.max() <= ulps
    special = np.array([np.inf, -np.inf, np.nan, 0.0], dtype)
    out = np.empty_like(special)
    library.fg_tanh_array(special.ctypes.data, out.ctypes.data, special.size)
    np.testing.assert_array_equal(out, [1.0, -1.0, np.nan, 0.0])


def test_make_engine_names_the_engines():
    layout = ParameterLayout(2, 4, 2)
    assert ENGINES == ("auto", "numpy", "compiled")
    assert make_engine("numpy", layout, "sigmoid", "tanh", np.float32).name == "numpy"
    for bad in ("fast", None, "NUMPY"):
        with pytest.raises(ValueError,
                           match=r"engine must be one of \['auto', 'numpy', 'compiled'\]"):
            make_engine(bad, layout, "sigmoid", "tanh", np.float32)
    with pytest.raises(ValueError, match="readout must be one of"):
        make_engine("auto", layout, "sigmoid", "tanh", np.float32, "median")


@needs_compiler
def test_make_engine_auto_and_compiled_are_the_compiled_engine():
    layout = ParameterLayout(2, 4, 2)
    for name in ("auto", "compiled"):
        engine = make_engine(name, layout, "sigmoid", "tanh", np.float32, "max")
        assert isinstance(engine, CompiledEngine)
        assert (engine.name, engine.readout) == ("compiled", "max")


def _python(code, env, cwd=None):
    """Run ``code`` in a fresh interpreter with ``env`` added; its stdout."""
    full = {**os.environ, **env}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


FALLBACK = """
    import numpy as np
    from sklearn_fastgrnn._build import BuildError
    from sklearn_fastgrnn._cell import ParameterLayout
    from sklearn_fastgrnn._compiled_cell import make_engine
    layout = ParameterLayout(2, 5, 2)
    print(make_engine("auto", layout, "sigmoid", "tanh", np.float32).name)
    try:
        make_engine("compiled", layout, "sigmoid", "tanh", np.float32)
    except BuildError as exc:
        assert isinstance(exc, RuntimeError)
        print("error:", exc)
"""


@pytest.mark.parametrize("setting", ["CC names a missing command", "no compiler on PATH",
                                     "the compiler fails"])
def test_without_a_working_compiler_auto_is_numpy_and_compiled_says_why(tmp_path, setting):
    env = {"SKLEARN_FASTGRNN_CACHE": str(tmp_path / "cache")}
    if setting == "CC names a missing command":
        env["CC"] = str(tmp_path / "no-such-cc")
        reason = "no C compiler was found"
    elif setting == "no compiler on PATH":
        env["CC"], env["PATH"] = "", str(tmp_path)
        reason = "no C compiler was found"
    else:
        failing = tmp_path / "failing-cc"
        failing.write_text("#!/bin/sh\necho 'cc: fatal error: out of luck' >&2\nexit 1\n")
        failing.chmod(0o755)
        env["CC"] = str(failing)
        reason = "out of luck"
    first, message = _python(FALLBACK, env).split("\n", 1)
    assert first == "numpy"
    assert message.startswith("error: engine='compiled' cannot run:")
    assert reason in message and "engine='auto' falls back" in message


@needs_compiler
def test_a_second_process_loads_the_library_from_the_cache(tmp_path):
    """The first process builds into the cache (atomically: no temporary file is
    left); the second runs the compiler only for its version, not to build."""
    log = tmp_path / "cc.log"
    wrapper = tmp_path / "logging-cc"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec {" ".join(find_compiler())} "$@"\n')
    wrapper.chmod(0o755)
    cache = tmp_path / "cache"
    env = {"SKLEARN_FASTGRNN_CACHE": str(cache), "CC": str(wrapper)}
    code = """
        import numpy as np
        from sklearn_fastgrnn._cell import ParameterLayout
        from sklearn_fastgrnn._compiled_cell import make_engine
        print(make_engine("compiled", ParameterLayout(2, 5, 2), "tanh", "relu", np.float32).name)
    """
    assert _python(code, env).strip() == "compiled"
    builds = [line for line in log.read_text().splitlines() if "-shared" in line]
    assert len(builds) == 1
    assert [p.suffix for p in cache.iterdir()] == [".so"]
    assert _python(code, env).strip() == "compiled"
    builds_after = [line for line in log.read_text().splitlines() if "-shared" in line]
    assert builds_after == builds


def test_importing_the_package_builds_nothing(tmp_path):
    cache = tmp_path / "cache"
    _python("import sklearn_fastgrnn, sklearn_fastgrnn._compiled_cell",
            {"SKLEARN_FASTGRNN_CACHE": str(cache)})
    assert not cache.exists()


def test_build_errors_are_runtime_errors():
    assert issubclass(BuildError, RuntimeError)


def test_address_is_the_first_elements_for_every_array():
    """The buffer protocol's address, and NumPy's where the protocol refuses
    the array (read-only, empty, strided, transposed)."""
    a = np.arange(12.0).reshape(3, 4)
    read_only = a.copy()
    read_only.flags.writeable = False
    for array in (a, a[1:], a[:, 1:], a[::2], a.T, read_only, np.empty(0),
                  np.zeros((2, 0), np.float32), np.zeros(3, np.int64)[1:]):
        assert address(array) == array.__array_interface__["data"][0]


@needs_compiler
@pytest.mark.parametrize("readout", READOUTS)
def test_the_predictor_batch_path_runs_on_the_engine_it_is_given(rng, readout):
    """Predictor(engine="compiled", make_engine=...) predicts a batch as the NumPy
    path does; predictor_for keeps one per engine name."""
    from sklearn_fastgrnn._cell import Predictor, predictor_for

    layout = ParameterLayout(3, 6, 4)
    coefs = layout.unpack(_params(rng, layout, spread=1.0))
    X = _batch(rng, 9, 7, 3, [7, 2, 7, 1, 5, 7, 3, 7, 6])
    lengths = np.array([7, 2, 7, 1, 5, 7, 3, 7, 6])
    numpy_path = Predictor(coefs, "sigmoid", "tanh", np.float64, readout)
    compiled = Predictor(coefs, "sigmoid", "tanh", np.float64, readout, "compiled",
                         make_engine)
    assert isinstance(compiled.batch_engine, CompiledEngine)
    np.testing.assert_allclose(compiled.outputs(X, lengths), numpy_path.outputs(X, lengths),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="needs make_engine"):
        Predictor(coefs, "sigmoid", "tanh", np.float64, readout, "auto")

    class Owner:
        pass

    owner = Owner()
    first = predictor_for(owner, coefs, "sigmoid", "tanh", np.float64, readout)
    assert predictor_for(owner, coefs, "sigmoid", "tanh", np.float64, readout) is first
    other = predictor_for(owner, coefs, "sigmoid", "tanh", np.float64, readout, "auto",
                          make_engine)
    assert other is not first and other.engine_name == "auto"


@needs_compiler
def test_flags_the_compiler_rejects_are_dropped(tmp_path):
    """A compiler without -mprefer-vector-width (another CPU family) builds the
    engine without it, keeping the other optional flags."""
    log = tmp_path / "cc.log"
    picky = tmp_path / "picky-cc"
    picky.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'for a in "$@"; do\n'
        '  if [ "$a" = "-mprefer-vector-width=512" ]; then echo "unknown $a" >&2; exit 1; fi\n'
        "done\n"
        f'exec {" ".join(find_compiler())} "$@"\n'
    )
    picky.chmod(0o755)
    code = """
        import numpy as np
        from sklearn_fastgrnn._cell import ParameterLayout
        from sklearn_fastgrnn._compiled_cell import make_engine
        print(make_engine("compiled", ParameterLayout(2, 5, 2), "sigmoid", "tanh", np.float64).name)
    """
    env = {"SKLEARN_FASTGRNN_CACHE": str(tmp_path / "cache"), "CC": str(picky)}
    assert _python(code, env).strip() == "compiled"
    builds = [line.split() for line in log.read_text().splitlines() if "-shared" in line]
    assert len(builds) == 2
    assert "-mprefer-vector-width=512" in builds[0]
    assert "-march=native" in builds[1] and "-mprefer-vector-width=512" not in builds[1]
