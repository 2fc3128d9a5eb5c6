"""One training call (``fit`` or ``partial_fit``): its data, state and epochs.

:class:`TrainingRun` holds what one call trains on (the sequences in the
engine's time-major layout, the encoded targets, the weights), the engine and
the loss, and runs epochs of mini-batches; the named tuples carry the state of
the call between the estimator's steps (``docs/developers.md`` shows the flow).
"""

import functools
import math
import sys
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from sklearn.metrics import check_scoring

from ._cell import predict_outputs, to_time_major
from ._compiled_adam import compiled_step
from ._compiled_cell import StepRows, make_engine
from ._compiled_epoch import compiled_epoch
from ._compiled_input import time_major
from ._compiled_loss import PenaltyAndClip, compiled_loss
from ._sequences import edge_extended

#: The share of the training sequences an epoch crops, with ``crop_fraction < 1``.
CROP_SHARE = 0.5

#: The places an epoch's input noise may start at in its pool of draws, beyond
#: the first (see :class:`InputNoise`)
NOISE_STARTS = 2**16

#: The last pool of noise drawn is kept for the next training call when it
#: holds at most this many values: a ``partial_fit`` over chunks of one size
#: then draws it once, not once a call
NOISE_POOL_KEPT = 2**22


def _noise_pool(seed, size, dtype, scale):
    """``size`` normal draws of standard deviation ``scale`` from ``seed``
    (a stream of its own beside the other uses of the seed), read only."""
    stream = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    pool = (scale * stream.standard_normal(size, dtype=np.float32)).astype(dtype)
    pool.flags.writeable = False
    return pool


_kept_noise_pool = functools.lru_cache(maxsize=1)(_noise_pool)


class InputNoise:
    """Normal noise of standard deviation ``scale`` on the values an epoch
    reads, drawn anew for each epoch.

    The draws are made once (see ``NOISE_POOL_KEPT``), into a pool of
    ``NOISE_STARTS`` values more than the largest array noised, from
    ``seed`` alone; an epoch's noise is the
    pool from a random place on (drawn from the epoch's generator), so that
    an epoch costs one addition, not a draw of every value. The pool is laid
    over the values time-major, ``(timestep, sequence, value)``, whatever
    the array's layout: a value's noise depends on its place in the data
    only, so the C loop and the loop in Python (which read other layouts) and
    padding (more timesteps, after the real ones) read the same noise, and
    ``k`` ``partial_fit`` calls read the noise of a ``fit`` of ``k`` epochs.
    An epoch overwrites each array noised with its clean values plus the
    noise: values the caller holds clean, or a copy kept (by name).

    Parameters
    ----------
    scale : float
        Standard deviation of the noise (> 0).
    seed : int
        The seed of the pool (the estimator's, kept between training calls).
    """

    def __init__(self, scale, seed):
        self.scale = float(scale)
        self.seed = int(seed)
        self._pool = None
        self._clean = {}  # name of a noised array -> its clean copy

    def add(self, name, steps, rng, clean=None):
        """Overwrite ``steps``, a view of shape (timesteps, sequences, values)
        of an array (the same under the same ``name`` every epoch), with its
        clean values plus noise that starts at a place drawn from ``rng``. The
        clean values are ``clean`` (of the shape of ``steps``), or a copy of
        ``steps`` made at the first call."""
        if clean is None:
            clean = self._clean.get(name)
        if clean is None:
            clean = self._clean[name] = steps.copy(order="K")
        size = clean.size + NOISE_STARTS
        if self._pool is None or self._pool.size < size:
            draw = _kept_noise_pool if size <= NOISE_POOL_KEPT else _noise_pool
            self._pool = draw(self.seed, size, clean.dtype, self.scale)
        start = int(rng.integers(NOISE_STARTS + 1))
        np.add(clean, self._pool[start:start + clean.size].reshape(clean.shape), out=steps)


class TrainingData(NamedTuple):
    """The validated training data of one call."""

    X: object  # as the user gave it (after validation), for scorers and callbacks
    X3: np.ndarray  # (n, T, window_ * d): cell steps as prediction reads them
    lengths: np.ndarray  # (n,) real cell steps of each sequence
    targets: np.ndarray  # encoded for the loss: class indices, or (n, n_outputs)
    weights: np.ndarray  # (n,) sample weights times class weights
    soft: object  # (n, n_outputs) teacher targets for distillation, or None
    timesteps: object = None  # (n, T, d) before windowing, when the windows move
    timestep_lengths: object = None  # (n,) their real lengths
    window: int = 1
    shift_windows: bool = False  # each epoch starts each sequence 0 to window - 1 late
    crop: float = 1.0  # an epoch crops sequences to parts of at least this fraction
    noise: float = 0.0  # standard deviation of the normal noise on every value an epoch reads


class ValidationSet(NamedTuple):
    """The sequences early stopping watches, as :class:`TrainingData` holds them."""

    X: object
    X3: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


class StartState(NamedTuple):
    """What a call trains from: weights, optimiser, schedule, RNG, stopping rule,
    and the average of the weights (None when ``weight_averaging=0``)."""

    flat: np.ndarray
    optimizer: object
    rng: np.random.Generator
    schedule: object
    monitor: object
    average: object


class Quality(NamedTuple):
    """How well some weights fit the training data."""

    loss: float  # the task loss, without the L2 penalty
    quality: float  # accuracy, or R²
    baseline: float  # the quality of the best constant prediction


def take(targets, idx):
    """Rows ``idx`` of ``targets``: an array, or a tuple of arrays (distillation)."""
    if isinstance(targets, tuple):
        return tuple(part[idx] for part in targets)
    return targets[idx]


def _normalised(weights, batches):
    """``weights`` each divided by the sum of its batch's (``batches``: slices),
    and those sums (a batch of sum 0 keeps weights 0)."""
    sums = np.empty(len(batches))
    normalised = np.zeros(len(weights), weights.dtype)
    for b, sl in enumerate(batches):
        w = weights[sl]
        sums[b] = float(w.sum())
        if sums[b] != 0.0:
            normalised[sl] = w / w.dtype.type(sums[b])
    return normalised, sums


class TrainingRun:
    """The data, engine and loss of one ``fit``/``partial_fit`` call.

    Parameters
    ----------
    estimator : BaseFastGRNN
        The working copy that trains (its hyper-parameters and counters).
    layout : ParameterLayout
    data : TrainingData
    loss : loss object of :mod:`~sklearn_fastgrnn._losses`
        The training loss (a :class:`~sklearn_fastgrnn._losses.Distillation`
        with soft targets); validation and diagnosis use its task loss.
    val : ValidationSet or None
        The validation set early stopping watches.
    """

    def __init__(self, estimator, layout, data, loss, val):
        dtype = data.X3.dtype
        self.estimator = estimator
        self.layout = layout
        self.data = data
        self.lengths = data.lengths  # of the cell steps of the current epoch
        self.engine = make_engine(
            estimator.engine, layout, estimator.gate_nonlinearity,
            estimator.update_nonlinearity, dtype, estimator.readout,
        )
        self.extended = self.starts = None
        if data.timesteps is not None:  # windows that move: cut from the timesteps
            k, T = data.window, data.timesteps.shape[1]
            # the last window of a sequence started k - 1 late ends before T + 3k;
            # of a crop starting c late, before c + T + 3k
            n_steps = T + 3 * k + (T if data.crop < 1.0 else 0)
            self.extended = edge_extended(data.timesteps, data.timestep_lengths, k - 1, n_steps)
        # the compiled engine reads the windows where they lie in self.extended
        self._in_place = self.engine.name == "compiled" and self.extended is not None
        self.targets = data.targets if data.soft is None else (data.targets, data.soft)
        self.loss = loss
        self.task_loss = getattr(loss, "hard", loss)
        # a mini-batch's loss, L2 penalty and clipping: in C with the compiled engine
        compiled = self.engine.name == "compiled"
        self._batch_loss = compiled_loss(loss) if compiled else loss
        self._penalty_and_clip = PenaltyAndClip(
            layout.n_weights, estimator.alpha_, estimator.clip_grad_norm, compiled
        )
        self.val = val
        self.scorer = None
        if val is not None and estimator.scoring != "loss":
            self.scorer = check_scoring(estimator, scoring=estimator.scoring)
        self.grad = np.empty(layout.size, dtype=dtype)
        self._batch_buffers = {}
        self._run_views = {}  # number of timesteps -> view of self.extended
        self._step = (None, None, None)  # (optimizer, flat, its step function)
        self._in_c = (None, None, None)  # (optimizer, flat, its CompiledEpoch or None)
        self._sequences = None  # data.X3, C-contiguous, for the C epoch loop
        # (sequences, batch size) -> the batch weights of an epoch, when every
        # sequence weighs 1 (the default): the same every epoch
        self._unit_batches = {} if bool((data.weights == 1).all()) else None
        self._slices = {}  # (sequences, batch size) -> the epoch's batches
        self.sparsity = None  # a _sparsity.SparseTraining when W or U is sparse
        self.noise = None  # an InputNoise, from the first epoch, with data.noise > 0

    @functools.cached_property
    def Xa(self):
        """The sequences in the engine's time-major layout (T, n, d + 1), which
        the batches of the loop in Python are copied from; made on first use
        (the C epoch loop reads the sequences themselves)."""
        # in C (the same array) with the compiled engine
        copy = time_major if self.engine.name == "compiled" else to_time_major
        return copy(self.data.X3, self.data.X3.dtype)

    def _move_windows(self, rng):
        """Move where the windows fall, for one epoch: each sequence is read
        whole or, with probability CROP_SHARE, as a random part of ``crop`` to
        all of its timesteps (``crop < 1``), and its windows start 0 to
        ``window - 1`` timesteps early (``shift_windows``): they read the
        timesteps before a part, or copies of the first timestep before the
        sequence."""
        data = self.data
        k, lengths = data.window, data.timestep_lengths
        n = len(lengths)
        shifts = rng.integers(0, k, n) if data.shift_windows else np.zeros(n, np.int64)
        starts = np.zeros(n, np.int64)
        if data.crop < 1.0:
            parts = np.ceil(rng.uniform(data.crop, 1.0, n) * lengths).astype(np.int64)
            parts = np.minimum(np.maximum(parts, 1), lengths)
            cropped = rng.random(n) < CROP_SHARE
            starts = np.where(cropped, rng.integers(0, lengths - parts + 1), 0)
            lengths = np.where(cropped, parts, lengths)
        # where each sequence's first window starts in self.extended
        self.starts = k - 1 - shifts + starts
        self.lengths = -(-(lengths + shifts) // k)

    def _batch(self, idx, lengths, uniform=False):
        """Time-major batch of the sequences ``idx`` (of ``lengths`` cell steps),
        cut to its longest one (an array, or StepRows the engine reads in
        place); the lengths, or None when none is padded (``uniform``: the
        caller knows that every length is the same)."""
        T_batch = int(lengths[0] if uniform else lengths.max())
        padded = None if uniform or lengths.min() == T_batch else lengths
        if self._in_place:  # windows moved (see _move_windows), read where they lie
            (E, step), bases = self._moved_rows(idx)
            return StepRows(E, bases, step, (T_batch, len(idx), step + 1)), padded
        buf = self._batch_buffers.get(len(idx))
        if buf is None or len(buf) < T_batch:
            T = max(T_batch, self.Xa.shape[0])
            buf = np.empty((T, len(idx), self.Xa.shape[2]), self.Xa.dtype)
            buf[:, :, -1] = 1.0  # the ones column (see to_time_major)
            self._batch_buffers[len(idx)] = buf
        if self.starts is None:
            np.take(self.Xa[:T_batch], idx, axis=1, out=buf[:T_batch])
        else:  # windows moved (see _move_windows)
            k = self.data.window
            steps = self._runs(T_batch * k)[idx, self.starts[idx]]  # block copies
            buf[:T_batch, :, :-1] = steps.reshape(len(idx), T_batch, -1).transpose(1, 0, 2)
        return buf[:T_batch], padded

    def _moved_rows(self, idx):
        """Where the moved windows of the sequences ``idx`` lie in the
        edge-extended sequences: ``((array, step between a row's steps), each
        row's base)`` (see StepRows)."""
        E, k = self.extended, self.data.window
        bases = (idx.astype(np.int64) * E.shape[1] + self.starts[idx]) * E.shape[2]
        return (E, k * E.shape[2]), bases

    def _runs(self, n_steps):
        """Every run of ``n_steps`` timesteps of the edge-extended sequences, as
        a view (n, start, step, d); made once per length."""
        runs = self._run_views.get(n_steps)
        if runs is None:
            E = self.extended
            n, length, d = E.shape
            runs = self._run_views[n_steps] = as_strided(
                E, shape=(n, length - n_steps + 1, n_steps, d),
                strides=(E.strides[0], E.strides[1], E.strides[1], E.strides[2]),
                writeable=False,
            )
        return runs

    def _optimizer_step(self, optimizer, flat):
        """``optimizer.step`` for ``flat``: with the compiled engine, compiled
        (the same update to the bit, one C call; see ``_compiled_adam.py``)."""
        if self._step[0] is not optimizer or self._step[1] is not flat:
            step = optimizer.step
            if self.engine.name == "compiled":
                step = compiled_step(optimizer, flat, self.grad)
            self._step = (optimizer, flat, step)
        return self._step[2]

    def _compiled_epoch(self, optimizer, flat, step):
        """The :class:`~._compiled_epoch.CompiledEpoch` of ``optimizer`` and
        ``flat``, or None where the batches run in Python."""
        if self._in_c[0] is not optimizer or self._in_c[1] is not flat:
            in_c = None
            if (not isinstance(self.targets, tuple) and self.targets.dtype == np.int64
                    and self.data.weights.dtype == flat.dtype):
                in_c = compiled_epoch(self.engine, self._batch_loss,
                                      self._penalty_and_clip, step, flat, self.grad)
            self._in_c = (optimizer, flat, in_c)
        return self._in_c[2]

    def _epoch_rows(self, order):
        """Where the steps of the sequences ``order`` lie, for the C epoch loop:
        ``((array, step between a row's steps), each row's base)``, as the
        batches of :meth:`_batch` are read: the moving windows in the
        edge-extended sequences, or else the sequences themselves (each row's
        steps one after another, which reads faster than the time-major copy's
        rows spread over all the sequences)."""
        if self._in_place:
            return self._moved_rows(order)
        sequences = self._c_sequences()
        _, T, d = sequences.shape
        return (sequences, d), order.astype(np.int64) * (T * d)

    def _c_sequences(self):
        """The sequences as the cell reads them, C-contiguous, for the C epoch
        loop: ``data.X3`` itself as a rule, a copy when noised."""
        if self._sequences is None:
            X3 = self.data.X3
            self._sequences = np.array(X3, order="C") if self.data.noise > 0 else (
                np.ascontiguousarray(X3))
        return self._sequences

    def _add_noise(self, in_c, rng):
        """Add this epoch's input noise (``data.noise``) to what it reads: the
        edge-extended timesteps the moving windows are cut from (as far as a
        window reads real timesteps), else the sequences the C epoch loop
        (``in_c``) reads, else the time-major copy the loop in Python reads.
        The validation and training-quality passes read ``data.X3``, clean."""
        if self.noise is None:
            self.noise = InputNoise(self.data.noise, self.estimator._split_seed)
        if self.extended is not None:
            T, k = self.data.timesteps.shape[1], self.data.window
            steps = self.extended[:, :T + 3 * k].transpose(1, 0, 2)
            self.noise.add("extended", steps, rng)
        elif in_c:  # a copy of data.X3, whose values are the clean ones
            self.noise.add("sequences", self._c_sequences().transpose(1, 0, 2), rng,
                           clean=self.data.X3.transpose(1, 0, 2))
        else:
            self.noise.add("time-major", self.Xa[..., :-1], rng)

    def _batch_slices(self, n, batch_size):
        """The mini-batches of an epoch of ``n`` sequences: consecutive slices
        of ``batch_size`` (the last one may be shorter), made once per size."""
        batches = self._slices.get((n, batch_size))
        if batches is None:
            batches = self._slices[n, batch_size] = [
                slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)
            ]
        return batches

    def _batch_weights(self, order, batch_size):
        """The weights of the sequences ``order``, each normalised by the sum
        of its mini-batch's (:meth:`_batch_slices`), and the batches' sums (0:
        the batch is skipped). With every sequence of weight 1 they are the
        same every epoch: made once per size (and shared, so read only)."""
        batches = self._batch_slices(len(order), batch_size)
        if self._unit_batches is None:
            return _normalised(self.data.weights[order], batches)
        cached = self._unit_batches.get((len(order), batch_size))
        if cached is None:
            ones = np.ones(len(order), self.data.weights.dtype)
            cached = self._unit_batches[len(order), batch_size] = _normalised(ones, batches)
        return cached

    def epoch(self, flat, optimizer, lr, train, batch_size, rng):
        """One pass over ``train`` in mini-batches; returns the mean loss."""
        # overflow shows up as a non-finite loss, reported with a clear error
        with np.errstate(over="ignore", invalid="ignore"):
            return self._epoch(flat, optimizer, lr, train, batch_size, rng)

    def _epoch(self, flat, optimizer, lr, train, batch_size, rng):
        est = self.estimator
        if self.data.timesteps is not None:
            self._move_windows(rng)
        order = rng.permutation(train) if est.shuffle else train
        # the epoch's targets and lengths in its order: a batch is a slice
        targets, lengths = take(self.targets, order), self.lengths[order]
        batches = self._batch_slices(len(order), batch_size)
        progress = est.verbose >= 2 and len(batches) >= 50
        step = self._optimizer_step(optimizer, flat)
        in_c = (None if progress or self.sparsity is not None
                else self._compiled_epoch(optimizer, flat, step))
        weights, sums = self._batch_weights(order, batch_size)
        if self.data.noise > 0:
            self._add_noise(in_c is not None, rng)
        if in_c is None:
            total_loss, total_weight = self._batches(
                flat, step, lr, order, targets, weights, sums, lengths, batches, progress)
        else:  # the same batches in one C call
            rows, bases = self._epoch_rows(order)
            result = in_c.run(rows, bases, np.ascontiguousarray(lengths, np.int64),
                              targets, weights, sums, batch_size, lr)
            if result.failed is not None:
                raise ValueError(est._divergence_message(
                    f"the loss became {result.failed_loss} in epoch {est.n_iter_ + 1}, "
                    f"mini-batch {result.failed + 1}"
                ))
            total_loss, total_weight = result.total_loss, result.total_weight
        if not np.isfinite(flat).all():
            raise ValueError(est._divergence_message(
                f"the weights became non-finite in epoch {est.n_iter_ + 1}"
            ))
        return total_loss / total_weight

    def _batches(self, flat, step, lr, order, targets, weights, sums, lengths, batches,
                 progress):
        """The epoch's mini-batches one by one (the reference of the C loop),
        ``weights`` normalised within their batch and ``sums`` the batches'
        weights (:meth:`_batch_weights`); the weighted sum of their losses and
        the sum of their weights."""
        est = self.estimator
        engine, grad, finish = self.engine, self.grad, self._penalty_and_clip
        uniform = lengths.min() == lengths.max()  # no batch of this epoch is padded
        total_loss = total_weight = 0.0
        for b, sl in enumerate(batches):
            w, w_sum = weights[sl], float(sums[b])
            if w_sum == 0.0:
                continue
            Xb, batch_lengths = self._batch(order[sl], lengths[sl], uniform)
            outputs = engine.forward(flat, Xb, batch_lengths)
            doutputs = np.empty_like(outputs)
            loss = self._batch_loss(outputs, take(targets, sl), w, doutputs)
            engine.backward(doutputs, grad)
            if self.sparsity is None:
                loss += finish(flat, grad)  # the L2 penalty, then clipping
            else:  # the penalty, the sparse support, then clipping
                loss += finish.penalty(flat, grad)
                self.sparsity.before_step(grad)
                finish.clip(grad)
            if not math.isfinite(loss):
                raise ValueError(est._divergence_message(
                    f"the loss became {loss} in epoch {est.n_iter_ + 1}, mini-batch {b + 1}"
                ))
            step(flat, grad, lr)
            if self.sparsity is not None:
                self.sparsity.after_step(flat)
            total_loss += loss * w_sum
            total_weight += w_sum
            if progress and (b + 1) % max(1, len(batches) // 20) == 0:
                done = (b + 1) / len(batches)
                sys.stdout.write(f"\r  [{'=' * int(20 * done):<20}] {done:4.0%}")
                sys.stdout.flush()
        if progress:
            sys.stdout.write("\r" + " " * 30 + "\r")
        return total_loss, total_weight

    def _outputs(self, flat, X3, lengths):
        est = self.estimator
        return predict_outputs(
            self.layout.views(flat), est.gate_nonlinearity, est.update_nonlinearity,
            X3, lengths, flat.dtype, est.readout, est.engine, make_engine,
        )

    def evaluate(self, flat):
        """Weighted validation loss (the task loss) and score.

        The score is the loss's quality (weighted accuracy, or R²), or the
        value of ``scoring`` when it names a scorer.
        """
        X, X3, lengths, targets, weights = self.val
        outputs = self._outputs(flat, X3, lengths)
        loss = self.task_loss.value(outputs, targets, weights / weights.sum())
        if self.scorer is None:
            return loss, self.task_loss.quality(outputs, targets, weights)
        est = self.estimator  # the working copy: setting coefs_ publishes nothing
        est.coefs_ = est._public_coefs(self.layout.unpack(flat))
        score = self.scorer(est, X, est._decode_targets(targets), sample_weight=weights)
        return loss, float(score)

    def training_quality(self, flat, train, max_samples=10_000):
        """:class:`Quality` of ``flat`` on the training data.

        On at most ``max_samples`` training sequences (evenly spaced), with the
        sample weights.
        """
        idx = train[:: max(1, math.ceil(len(train) / max_samples))]
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = self._outputs(flat, self.data.X3[idx], self.data.lengths[idx])
        w, targets = self.data.weights[idx], self.data.targets[idx]
        loss = self.task_loss.value(outputs, targets, w / w.dtype.type(w.sum()))
        return Quality(
            loss, self.task_loss.quality(outputs, targets, w),
            self.task_loss.baseline_quality(targets, w),
        )

    def report(self, record):
        """Print one line for an epoch (``verbose >= 1``)."""
        parts = [f"Epoch {record['epoch']}", f"loss {record['train_loss']:.5f}"]
        if record["val_score"] is not None:
            parts.append(f"val_loss {record['val_loss']:.5f}")
            parts.append(f"val_score {record['val_score']:.4f}")
        parts.append(f"lr {record['learning_rate']:.3g}")
        parts.append(f"{record['seconds']:.2f}s")
        if record["event"] is not None:
            parts.append(record["event"])
        print(", ".join(parts), flush=True)
