"""BaseFastGRNN: what the FastGRNN classifier and regressor share.

The base holds the hyper-parameters every task has, the training loop as named
steps (``_train``), ``fit``/``partial_fit``, prediction of the raw outputs,
tags and pickling. A task subclass supplies the hooks that are about its
targets: how ``y`` is encoded for the loss (``_encode_targets``) and decoded
(``_decode_targets``), the loss object (``_task_loss``), how a validation set is
held out (``_split_validation``), per-target weights (``_target_weights``) and
the words of the "learned nothing" diagnosis (``_no_better_message``).
``docs/developers.md`` walks through one ``fit``.
"""

import copy
import functools
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
)

from . import _callbacks, _compiled_input, _losses, _scaling, _size
from ._averaging import WeightAverage
from ._cell import READOUTS, ParameterLayout, init_parameters, predictor_for
from ._channels import (
    base_values,
    cell_values,
    change_offsets,
    envelope_width,
    n_cell_channels,
    offsets_of,
    uses_changes,
)
from ._compat import check_sample_weight
from ._compiled_cell import ENGINES, make_engine
from ._nonlinearities import NONLINEARITIES
from ._optimizers import SGD, Adam, LearningRateSchedule
from ._sequences import light_sequences, phase_shifts, validate_sequences, windowed
from ._sparsity import SparseTraining
from ._statistics import lower_median
from ._stopping import PlateauMonitor, patience_epochs
from ._threads import one_blas_thread
from ._training import StartState, TrainingData, TrainingRun, ValidationSet
from ._version import __version__
from .exceptions import InconsistentVersionWarning
from .streaming import CellStream, Streamer

# The "auto" defaults, each chosen on the accuracy suite of benchmarks/bench_accuracy.py
# (docs/training.md gives the measurements).
AUTO_ALPHA_SCALE = 1.0  # alpha="auto": this over the number of training sequences ...
AUTO_ALPHA_MAX = 1e-2  # ... at most this for a classifier (from 100 sequences down), ...
AUTO_REGRESSION_ALPHA_MAX = 5e-3  # ... this for a regressor (from 200 down), ...
AUTO_CROP_ALPHA_MAX = 2e-3  # ... and this with crops (from 500 down)
AUTO_BATCH_FRACTION = 0.1  # batch_size="auto": a tenth of the data ...
AUTO_BATCH_RANGE = (8, 64)  # ... clipped to this range
AUTO_MIN_PATIENCE_STEPS = 500  # n_iter_no_change="auto": at least this many steps,
AUTO_PLATEAU_PATIENCE_STEPS = 3000  # ... this many while the loss is still at chance,
AUTO_PLATEAU_LEVEL = 0.9  # that is above this fraction of the chance-level loss
AUTO_MIN_STEPS = 6000  # max_iter="auto": at least this many optimiser steps ...
AUTO_MIN_EPOCHS = 200  # ... and at least this many epochs
AUTO_EARLY_STOPPING_SAMPLES = 10_000  # early_stopping="auto" is on from this size
AUTO_WINDOW_STEPS = 50  # window="auto": about this many cell steps per typical sequence
AUTO_PHASES = 4  # window_phases="auto": at most this many phases of the windows
AUTO_LONG_WINDOW = 4  # envelope_width, crop_fraction "auto": windows of at least this many steps
AUTO_CROP_FRACTION = 0.3  # crop_fraction="auto": the shortest crop, with long windows
AUTO_INPUT_NOISE = 0.2  # input_noise="auto": this, with scale_input and window_ = 1
AUTO_CROP_BUDGET = 2  # max_iter="auto" with crops: this many times the epochs
AUTO_LR_REDUCTIONS = 2  # max_lr_reductions="auto": plateaus the adaptive rate answers,
AUTO_CROP_LR_REDUCTIONS = 1  # ... with crops, and with the tail of input noise
AUTO_HIDDEN_SIZE = 32  # hidden_size="auto": this, ...
AUTO_MANY_OUTPUTS = 10  # ... or with more outputs (classes, labels, targets) than this
AUTO_MANY_HIDDEN_SIZE = 64  # ... this
AUTO_LABEL_SMOOTHING = 0.1  # label_smoothing="auto": this for more than AUTO_MANY_OUTPUTS classes
AUTO_RANK_DIVISOR = 4  # w_rank="auto": hidden_size // this with envelope channels
AUTO_ADAPTIVE_STEPS = 50  # learning_rate="auto" is adaptive from this many steps an epoch
# More parameters than this is no tiny model: a typo, refused before allocating
MAX_PARAMETERS = 2**31 - 1
# scale_input warns when the working dtype rounds a raw input value by more
# than this many of its channel's standard deviations (folded into the
# weights, the standardisation reads the raw values)
ROUNDING_LIMIT = 0.05
_INTEGER_PARAMS = (
    "hidden_size", "n_timesteps", "w_rank", "u_rank", "lr_decay_step", "batch_size",
    "max_iter", "n_iter_no_change", "iht_interval", "window", "window_phases",
    "envelope_width",
)
# What a model of release 0.1.0 (which had none of these parameters) did: a model
# file of that release without them is read with these values.
LEGACY_PARAMS = {"readout": "last", "window": 1, "scale_input": False, "engine": "numpy",
                 "shift_windows": False, "weight_averaging": 0.0, "change_channels": False,
                 "window_phases": 1, "envelope_width": 0, "crop_fraction": 1.0,
                 "input_noise": 0.0}


# The documentation of what every FastGRNN estimator shares, completed by each
# estimator's docstring (``str.format`` fields in braces: see ``docstring``).
PARAMETERS_DOC = """\
    hidden_size : int or "auto", default="auto"
        Size ``H`` of the hidden state. "auto" is 32, or 64 for more than
        10 {outputs_named}: one state then carries many outputs.
        ``hidden_size_`` is the value used.
    n_timesteps : int or None, default=None
        How a 2D ``X`` is read: None, one column per timestep of a univariate
        series; ``k``, k time-major steps of ``m / k`` channels. Ignored for 3D.
    window : int or "auto", default="auto"
        Timesteps the cell reads per step: step ``j`` reads the ``window``
        timesteps ``j * window .. j * window + window - 1`` (``window *
        n_channels`` inputs, time-major), so a sequence of ``T`` steps is
        ``ceil(T / window)`` cell steps: faster to train, and less to
        remember. The last, partial window of a sequence repeats its last
        timestep. "auto" is about ``T / 50`` for the median length ``T`` of the
        training sequences, weighted as they are (1 up to 74 steps), so
        sequences of typical length are about 50 cell steps and longer ones
        more. ``window_`` is the value used.
    shift_windows : bool, default=True
        With windows of several timesteps, move where they fall in each
        training epoch: every sequence starts with 0 to ``window_ - 1``
        (at random) copies of its first timestep, so that the model does not
        learn the place of the window boundaries (a data augmentation).
    crop_fraction : float in (0, 1] or "auto", default="auto"
        In each training epoch, read half of the training sequences (at
        random) as a random part of themselves: consecutive timesteps, from
        ``crop_fraction_`` to all of the sequence's length (a data
        augmentation: the class of a long oscillating series does not hang
        on where it was cut). With crops, the "auto" ``learning_rate`` is
        "adaptive" with one reduction and the "auto" ``max_iter`` twice as
        long (the loss of the crops keeps falling, slowly), and the training
        loss (``loss_curve_``) is the loss of the crops. 1 reads every
        sequence whole. "auto" is {crop_auto}. ``crop_fraction_`` is the
        value used.
    input_noise : float >= 0 or "auto", default="auto"
        In each training epoch, add normal noise of this standard deviation
        to every value the cell reads (a data augmentation: the model learns
        what survives small perturbations of its input). With
        ``scale_input`` the values are standardised, so the noise is in
        standard deviations of each channel (and of its change channels);
        without, in the input's units. Prediction, validation and the
        training quality read the input as it is. "auto" is 0.2 with
        ``scale_input`` when the cell reads one timestep a step (``window_``
        = 1), else 0 (no noise: moving windows and crops augment already).
        With noise, the "auto" ``learning_rate`` anneals it (see there).
    window_phases : int or "auto", default="auto"
        How many places of the window boundaries prediction reads each
        sequence with: phase ``j`` reads it after ``(j * window_) //
        window_phases_`` copies of its first timestep, as ``shift_windows``
        does in training, and the model's readout is the mean of the phases'
        readouts (a mean of their outputs, with no new weight). Prediction
        and a streamer's state cost ``window_phases_`` times one phase's.
        "auto" is ``min(window_, 4)`` with ``shift_windows``, else 1; an
        integer is capped at ``window_``. ``window_phases_`` is the value used.
    change_channels : bool or "auto", default="auto"
        Give the cell, beside each input channel, its absolute change since
        the previous timestep, ``c_t = |x_t - x_{{t-1}}|`` (0 at the first
        timestep), and its logarithm ``log(c_t + change_offsets_)``:
        ``3 * n_channels`` values per timestep. How much a series moves, and
        its order of magnitude, are not linear in its values, which the cell
        reads through ``W``. Every prediction path and export computes them
        from the raw input. "auto" is on when the longest training sequence
        has more than one timestep (one timestep has no change).
        ``change_channels_`` is the value used.
    envelope_width : int or "auto", default="auto"
        Give the cell, beside each input channel, its largest and smallest
        value over the last ``envelope_width_`` timesteps (fewer at the start
        of a sequence), before the change channels, which are then taken of
        all three: ``9 * n_channels`` values per timestep with both. A window
        reads its timesteps at fixed places, and a peak moves between them
        from one sequence to the next; the envelope holds it for
        ``envelope_width_`` timesteps wherever it fell. "auto" is
        {envelope_auto}; 0 or 1 is none. ``envelope_width_`` is the value used.
    readout : {{"last", "mean", "max"}}, default="last"
        What the output layer reads: the state after the last real step, or
        the mean or the maximum (per hidden unit) of the states over the real
        steps, which gives every step a direct path to the loss.
    engine : {{"auto", "numpy", "compiled"}}, default="auto"
        What computes the forward pass and the exact BPTT in training (and
        batch prediction): "compiled", C code built at the first fit with the
        system's C compiler and cached (a clear error without a compiler);
        "numpy", the NumPy engine the compiled one is tested against; "auto",
        the compiled engine when it can be built, else NumPy. The two agree to
        rounding; a fit is bit-identical for a given engine. ``engine_`` says
        which one ran.
    scale_input : bool, default=True
        Standardise each channel (weighted mean and standard deviation over the
        real timesteps of the training data) while training, and fold the map
        into ``W`` and the biases at the end: ``coefs_`` read the raw input,
        and raw input trains as well as standardised input. ``fit`` warns
        when a channel's mean is so many deviations from zero that ``dtype``
        rounds its raw values by more than 0.05 of a deviation (float32:
        about 8e5): subtract the offset first, or use ``dtype="float64"``.
    gate_nonlinearity, update_nonlinearity : str, default="sigmoid", "tanh"
        One of "sigmoid", "tanh", "relu", "quant_sigmoid", "quant_tanh".
    w_rank : int, "auto" or None, default="auto"
        Rank of ``W = W1 @ W2``, at most ``min(d, hidden_size)`` (``d`` the
        values the cell reads a step: ``window_`` times the channels, with the
        change and envelope channels); None for full rank. "auto" is
        ``hidden_size // 4`` (at least 1) with envelope channels, whose wide
        input it keeps small and regular, else full rank.
    u_rank : int or None, default=None
        Rank of ``U = U1 @ U2`` (at most ``hidden_size``); None for full rank.
    init : {{"chrono", "edgeml"}}, default="chrono"
        Initial weights. "edgeml" is EdgeML's: every matrix ``0.1 * N(0, 1)``,
        both biases 1. "chrono" (the default) differs in two places. The gate
        bias spreads the memory of the units over the longest sequence ``T``
        seen in ``fit`` (Tallec & Ollivier, 2018): ``bias_gate = log(u)``,
        ``u ~ U(1, max(T - 1, 2))``, so unit ``j`` keeps its state for about
        ``1 + u_j`` steps instead of EdgeML's 3.7 for every unit. And ``W`` is
        ``N(0, 0.25 / n_channels)``, so standardised input enters every unit
        with the same spread (0.5) whatever the number of channels.
    zeta_init, nu_init : float, default=1.0, -4.0
        Initial raw ``zeta`` and ``nu`` (before the sigmoid), as in EdgeML.
    solver : {{"adam", "sgd"}}, default="adam"
    learning_rate : {{"auto", "constant", "step", "adaptive"}}, default="auto"
        "adaptive" divides the rate by 5 whenever the stopping rule sees a
        plateau (patience epochs without improvement), and stops once it has
        been divided ``max_lr_reductions`` times; "step" multiplies it by
        ``lr_decay`` every ``lr_decay_step`` epochs and "constant" keeps it,
        both stopping at the first plateau. "auto" is "adaptive" from 50
        optimiser steps an epoch (3,200 sequences at the "auto" batch size),
        where a plateau at the initial rate is often the rate's own noise,
        and with crops (``crop_fraction``). Below 50 steps an epoch, with
        ``input_noise``, it is "adaptive" with a tail: after the last
        reduction, training runs the patience (``n_iter_no_change``) in
        epochs more and stops, whatever the loss does (the noised loss goes
        on falling long after the accuracy has settled). "constant"
        otherwise.
    learning_rate_init : float, default=0.01
    max_lr_reductions : int or "auto", default="auto"
        Plateaus the "adaptive" rate answers by dividing the rate by 5 before
        training stops. "auto" is 1 with crops (``crop_fraction``) and with
        the tail of ``learning_rate="auto"``, else 2.
    lr_decay : float, default=0.1
    lr_decay_step : int, default=50
    momentum : float, default=0.9
        SGD only.
    nesterovs_momentum : bool, default=True
        SGD only.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam only.
    alpha : float or "auto", default="auto"
        L2 penalty (see the loss above). "auto" is ``1 / n_samples`` for the
        ``n_samples`` sequences of the first training call (the less data,
        the stronger the prior, as a penalty on the sum of the losses would
        give), at most {alpha_auto_max};
        at most 2e-3 when training crops its sequences (``crop_fraction_ <
        1``), which regularises on its own. ``alpha_`` is the value used.
    clip_grad_norm : float or None, default=5.0
        Mini-batch gradients are scaled down to this global L2 norm; None
        disables clipping.
    weight_averaging : float in [0, 1), default=0.9
        The weights the model keeps are a moving average of the optimiser's
        weights over the epochs, each epoch weighing ``weight_averaging **
        age`` (normalised to add up to one), so that about the last ``1 / (1 -
        weight_averaging)`` epochs count; the average classifies unseen data
        better than the last epoch's weights (docs/training.md). 0 keeps the
        last epoch's weights. The optimiser and the training loss
        (``loss_curve_``) follow the weights themselves; early stopping scores
        and restores the average; after a late loss spike the best epoch's
        weights replace an average that lost more than half of what they
        gained over the best constant prediction. With sparse training the
        average starts when the support is frozen. Each ``partial_fit`` call
        counts as an epoch; a continued fit goes on from the optimiser's
        weights and the average (docs/design.md, "Average of the weights").
    batch_size : int or "auto", default="auto"
        Mini-batch size (clipped to the number of samples). "auto" is a tenth
        of the training set clipped to [8, 64]: small data gets enough
        optimiser steps per epoch, big data the throughput of larger batches.
    max_iter : int or "auto", default="auto"
        Maximum number of epochs in ``fit``. "auto" is enough epochs for 6,000
        optimiser steps, and at least 200; twice that with crops
        (``crop_fraction``).
    shuffle : bool, default=True
        Shuffle the training data before each epoch.
    random_state : int, RandomState instance or None, default=None
        Initial weights, shuffling and the validation split. An int gives
        bit-identical ``coefs_``.
    dtype : {{"float32", "float64"}} or None, default="float32"
        Precision of training. float32 (as PyTorch and Keras train) is about
        twice as fast as float64 and accurate to about 1e-6 relative; "float64"
        trains in double precision (for exactness work); None follows the
        input: float32 for float32 ``X``, float64 otherwise. Prediction
        computes in float32 for float32 ``X`` and in float64 otherwise.
    tol : float, default=1e-4
        Minimum improvement over the best value so far of the quantity the
        stopping rule watches (the training loss, or the validation loss or
        score with early stopping), as in ``MLPClassifier``.
    n_iter_no_change : int or "auto", default="auto"
        Patience: epochs without an improvement of ``tol`` after which the
        rate is reduced or training stops (see ``learning_rate``). "auto" is
        10 epochs, but at least 500 optimiser steps, and at least 3,000 while
        the watched loss is still above 0.9 times the loss of the best constant
        prediction ({constant}), so that the initial plateau of the loss on
        small data cannot stop training.
    early_stopping : bool or "auto", default="auto"
        Watch a held-out validation set instead of the training loss and
        restore the weights of its best epoch (unless the validation loss never
        fell below chance level: then the validation set, typically a handful
        of sequences, says nothing and the last weights are kept). The validation set is
        ``X_val``/``y_val`` when given to :meth:`fit`, else {validation_split}.
        "auto" turns it on from 10,000 training sequences. Ignored by
        ``partial_fit``.
    scoring : str, callable or "loss", default="loss"
        What early stopping watches: "loss" (the validation loss), or a
        scikit-learn scorer name or callable (greater is better).
    validation_fraction : float, default=0.1
    warm_start : bool, default=False
        Continue ``fit`` from the current weights and optimiser state.
    verbose : int, default=0
        1: one line per epoch and a last line saying why training stopped and
        which epoch's weights were kept; 2: also a progress bar within long
        epochs.
    distillation_alpha : float in [0, 1], default=0.5
        Weight of the distillation term when ``soft_targets`` are given.
    sparsity_w, sparsity_u : float in (0, 1], default=1.0
        Fraction of the entries of ``W`` and ``U`` kept (each factor when low
        rank): ``ceil(fraction * size)`` entries, trained by iterative hard
        thresholding (see Notes). 1.0 trains dense.
    sparsity_phases : (float, float), default=(0.25, 0.5)
        Fractions of the run trained dense, then with hard thresholding; the rest
        (at least one epoch: the sum must be below 1) trains on the frozen support.
    iht_interval : int, default=15
        Optimiser steps between two hard thresholdings (EdgeML's ``trimlevel``).
"""

ATTRIBUTES_DOC = """\
    coefs_ : dict of ndarray
        ``W`` (or ``W1``, ``W2``), ``U`` (or ``U1``, ``U2``), ``V``,
        ``bias_gate``, ``bias_update``, ``zeta``, ``nu``, ``bias_out``, in the
        training ``dtype``.
    n_features_in_ : int
        Columns of what ``fit`` saw (``n_timesteps * n_channels`` for 3D).
    feature_names_in_ : ndarray of str
        Defined when ``fit`` saw a DataFrame.
    n_timesteps_, n_channels_ : int
        Sequence shape seen in ``fit``.
    hidden_size_ : int
        Size of the hidden state (``hidden_size``).
    window_ : int
        Timesteps the cell reads per step (``window``).
    window_phases_ : int
        Places of the window boundaries prediction averages over
        (``window_phases``).
    alpha_ : float
        The L2 penalty of the last training call (``alpha``).
    crop_fraction_ : float
        The shortest crop of the last training call, 1.0 without crops
        (``crop_fraction``).
    envelope_width_ : int
        Timesteps of the envelope channels, 0 without them (``envelope_width``).
    change_channels_ : bool
        Whether the cell reads the change channels (``change_channels``).
    change_offsets_ : ndarray of shape (n_channels,) or (3 * n_channels,) or None
        What each channel's logarithm adds to the change: three tenths of the
        median of the channel's non-zero absolute changes in the first
        training data (1 for a channel that did not change), so that it
        scales with the input; with envelope channels, one for each value,
        largest and smallest of each channel. None without change channels.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    loss_ : float
        Training loss of the last epoch.
    loss_curve_ : list of float
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation {quality} (or ``scoring``'s value) per epoch with early
        stopping.
    best_validation_score_ : float or None
        ``validation_scores_`` of the kept epoch.
    best_epoch_ : int
        The (1-based) epoch whose weights (with ``weight_averaging``, whose
        average of the weights so far) the model holds: the best validation
        epoch with early stopping; without it the last epoch, or the epoch of
        the lowest training loss (its own weights) when they fit the training
        data much better ({quality}) than the last ones (after a late loss
        spike; see ``weight_averaging``).
    stop_reason_ : str
        Why the last ``fit`` ended (also the last line of ``verbose=1``).
    history_ : list of dict
        One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
        ``val_score`` (None without early stopping), ``learning_rate``,
        ``seconds``, and ``event`` (None, or what the stopping rule did after
        that epoch: the learning rate reduced, or training stopped).
    n_params_ : int
        Values the model stores: the entries of ``coefs_`` and the change
        offsets.
    model_size_bytes_ : int
        As EdgeML counts it: 4 bytes per entry, 8 per non-zero of a matrix
        trained sparse (see the compression guide), 4 per change offset.
        :meth:`summary` shows it per tensor.
"""

NOTES_DOC = """\
    Stopping: after each epoch the stopping rule compares the watched
    quantity with its best value. After ``n_iter_no_change`` epochs without
    an improvement of more than ``tol``, an "adaptive" learning rate is
    divided by 5 and training goes on, up to ``max_lr_reductions`` times;
    the next plateau (the first with "constant" or "step") ends training.
    Reaching ``max_iter`` instead warns (``ConvergenceWarning``), and so does a
    fitted model that predicts its own training data no better than
    {constant} does.

    Sparse training (``sparsity_w`` or ``sparsity_u`` below 1) follows the
    paper and EdgeML over a run of ``max_iter`` epochs: dense for the first
    ``floor(sparsity_phases[0] * max_iter)`` epochs, then hard thresholding
    every ``iht_interval`` optimiser steps (the support re-applied after the
    steps in between) until ``floor(sum(sparsity_phases) * max_iter)``, then
    training on the frozen support, whose pruned entries stay exactly 0. The
    stopping rule (and ``early_stopping``'s best-weights restore) only starts
    once the support is frozen, so a sparse fit always returns a sparse model.
    ``partial_fit`` follows the same schedule with one call per epoch (later
    calls keep training on the frozen support); ``warm_start`` continues it.
    With ``max_iter="auto"`` the schedule is laid over 200 epochs.
    See the compression guide (``docs/compression.md``).

    Thread safety: ``predict`` and the other prediction methods may run in
    threads while ``fit`` or ``partial_fit`` trains the same estimator: a
    call builds its new state aside and publishes it in one assignment at
    the end (and nothing at all when it fails), so a prediction sees the old
    model or the new one, never a mix. Two training calls on one estimator at
    the same time are not safe: the one that finishes last wins.
"""


def docstring(template, **fields):
    """An estimator's docstring: ``template`` with the shared sections filled in.

    ``template`` holds ``{parameters}``, ``{attributes}`` and ``{notes}``
    where the shared sections go, and the ``fields`` those sections ask for.
    """
    return template.format(
        parameters=PARAMETERS_DOC.format(**fields).rstrip("\n"),
        attributes=ATTRIBUTES_DOC.format(**fields).rstrip("\n"),
        notes=NOTES_DOC.format(**fields).rstrip("\n"),
        **fields,
    )


def resolve_batch_size(batch_size, n_samples):
    """``batch_size`` for ``n_samples`` training sequences ("auto": see AUTO_BATCH_*)."""
    if batch_size == "auto":
        low, high = AUTO_BATCH_RANGE
        batch_size = min(high, max(low, round(AUTO_BATCH_FRACTION * n_samples)))
    return max(1, min(int(batch_size), n_samples))


class BaseFastGRNN(_callbacks.CallbackSupport, BaseEstimator):
    """Base of the FastGRNN estimators: see :class:`FastGRNNClassifier` for the
    parameters, and the module docstring for the task hooks."""

    # the parameters a pickle or model file from before them is read with
    _legacy_params = LEGACY_PARAMS
    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_timesteps": [Interval(Integral, 1, None, closed="left"), None],
        "gate_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "update_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "w_rank": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "u_rank": [Interval(Integral, 1, None, closed="left"), None],
        "init": [StrOptions({"chrono", "edgeml"})],
        "zeta_init": [Interval(Real, None, None, closed="neither")],
        "nu_init": [Interval(Real, None, None, closed="neither")],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate": [StrOptions({"auto", "constant", "step", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_lr_reductions": [Interval(Integral, 0, None, closed="left"),
                              StrOptions({"auto"})],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "lr_decay_step": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "clip_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "weight_averaging": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}),
        ],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "scoring": [StrOptions({"loss"}), str, callable, HasMethods("__call__")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "distillation_alpha": [Interval(Real, 0, 1, closed="both")],
        "sparsity_w": [Interval(Real, 0, 1, closed="right")],
        "sparsity_u": [Interval(Real, 0, 1, closed="right")],
        "sparsity_phases": [tuple, list],
        "iht_interval": [Interval(Integral, 1, None, closed="left")],
        "readout": [StrOptions(set(READOUTS))],
        "window": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "scale_input": ["boolean"],
        "shift_windows": ["boolean"],
        "crop_fraction": [Interval(Real, 0, 1, closed="right"), StrOptions({"auto"})],
        "input_noise": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "window_phases": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "change_channels": ["boolean", StrOptions({"auto"})],
        "envelope_width": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "engine": [StrOptions(set(ENGINES))],
    }

    @classmethod
    def _get_param_names(cls):
        """scikit-learn's parameter names, read from ``__init__``'s signature
        once per class (every ``get_params``, so every fit and clone, asks; the
        signature of forty parameters takes a tenth of a millisecond)."""
        return list(_parameter_names(cls, cls.__init__))

    def _validate_params(self):
        """scikit-learn's checks, and no booleans where an integer is meant."""
        super()._validate_params()
        for name in _INTEGER_PARAMS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an "
                    f"integer, got the boolean {value!r}."
                )

    def _int(self, name):
        """A hyper-parameter as a Python int (NumPy integers included), or as is."""
        value = getattr(self, name)
        return int(value) if isinstance(value, Integral) else value

    # ------------------------------------------------------------ task hooks
    #: Whether ``y`` is converted to numbers when validated (regression).
    _numeric_targets = False
    #: Whether ``envelope_width="auto"`` gives envelope channels, and
    #: ``crop_fraction="auto"`` crops, to windows of at least AUTO_LONG_WINDOW
    #: timesteps (chosen per task by its benchmark).
    _auto_long_window = True
    #: The cap of ``alpha="auto"`` without crops (chosen per task by its benchmark).
    _auto_alpha_max = AUTO_ALPHA_MAX

    def _encode_targets(self, y, classes, incremental, resume):
        """Validate ``y``, set the fitted target attributes, return the targets."""
        raise NotImplementedError

    def _encode_validation_targets(self, y_val):
        """``y_val`` encoded as ``_encode_targets`` encodes ``y`` (fitted already)."""
        raise NotImplementedError

    def _decode_targets(self, targets):
        """Encoded targets back in the user's terms (for scorers)."""
        raise NotImplementedError

    def _n_outputs(self):
        """Number of output columns of the cell (``V`` has this many)."""
        raise NotImplementedError

    def _task_loss(self):
        """The loss object of the task (:mod:`~sklearn_fastgrnn._losses`)."""
        raise NotImplementedError

    def _split_validation(self, targets, seed):
        """(train, validation) indices for early stopping."""
        raise NotImplementedError

    def _target_weights(self, targets, weights, incremental):
        """``weights`` times the weight of each sample's target (class weights)."""
        return weights

    def _check_soft_targets(self, soft_targets, n_samples, dtype):
        """The teacher's targets of distillation, validated."""
        raise NotImplementedError

    def _no_better_message(self, quality):
        """The "learned nothing" warning for a :class:`~._training.Quality`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ input
    def _sample_weights(self, targets, sample_weight, X3, dtype, incremental):
        """Per-sample training weights: ``sample_weight`` times target weights."""
        weights = check_sample_weight(
            sample_weight, X3, dtype=dtype, ensure_non_negative=True,
            allow_all_zero_weights=True,
        )
        weights = self._target_weights(targets, weights, incremental)
        if not weights.sum() > 0:
            raise ValueError(
                "The sample weights (times class_weight) sum to zero: there is nothing "
                "to learn from. Give at least one sample a positive weight."
            )
        return weights

    def _working_dtype(self, input_dtype):
        """The training dtype for input of ``input_dtype`` (see ``dtype``)."""
        if self.dtype is None:
            return np.dtype(np.float32 if input_dtype == np.float32 else np.float64)
        return np.dtype(self.dtype)

    def _as_training_dtype(self, X3, dtype, name="X", source=None):
        """``X3`` (finite but for NaN padding) in the training ``dtype``.

        Refuses values that overflow it (float64 input beyond float32's range);
        ``source`` is a callable giving the float64 values of ``X3`` for the
        message, when ``X3`` is already in ``dtype``.
        """
        with np.errstate(over="ignore"):
            converted = X3.astype(dtype, copy=False)
        narrowed = converted.dtype != X3.dtype or source is not None
        if narrowed and dtype != np.float64 and np.isinf(converted).any():
            peak = float(np.nanmax(np.abs(X3 if source is None else source())))
            raise ValueError(
                f"{name} holds values up to {peak:.3g} in magnitude, beyond the range of "
                f"{dtype} ({float(np.finfo(dtype).max):.3g}) in which training computes "
                "(dtype). Scale the input (SequenceScaler or StandardScaler), or train "
                "with dtype='float64'."
            )
        return converted

    def _training_data(self, X, y, sample_weight, soft_targets, classes, incremental,
                       resume):
        """Validate the data of a training call: :class:`TrainingData`.

        The input and the targets are mapped as the model trains on them (see
        :mod:`~sklearn_fastgrnn._scaling`); the maps are fitted here unless a
        resumed model has them already.
        """
        X, X3, lengths, y = validate_sequences(
            self, X, y, reset=not resume, y_numeric=self._numeric_targets
        )
        targets = self._encode_targets(y, classes, incremental, resume)
        dtype = self._working_dtype(X3.dtype)
        weights = self._sample_weights(targets, sample_weight, X3, dtype, incremental)
        soft = None
        if soft_targets is not None:
            soft = self._check_soft_targets(soft_targets, len(X3), dtype)
        if not resume or not hasattr(self, "window_"):
            self.window_ = self._resolve_window(lengths, weights)
            self.envelope_width_ = self._resolve_envelope()
            self.change_channels_ = self._resolve_change_channels(int(lengths.max()))
            base = base_values(self, X3)
            self.change_offsets_ = change_offsets(base, weights) if self.change_channels_ else None
        else:
            self._check_resumable_channels()
            self._check_resumable_envelope()
            base = base_values(self, X3)
        self.window_phases_ = self._resolve_phases()
        self.crop_fraction_ = self._resolve_crop()
        if self.hidden_size != "auto" or not resume or not hasattr(self, "hidden_size_"):
            self.hidden_size_ = self._resolve_hidden_size()
        if self.alpha != "auto" or not resume or not hasattr(self, "alpha_"):
            self.alpha_ = self._resolve_alpha(len(X3))
        cell_input = cell_values(self, X3, base)
        self._update_maps(cell_input, targets, weights, incremental, resume)
        self._check_input_offsets(dtype)
        timesteps = self._mapped_input(cell_input, dtype)
        X3, cell_lengths = windowed(timesteps, lengths, self.window_)
        targets = self._map_targets(targets)
        if soft is not None:
            soft = self._map_targets(soft).astype(dtype, copy=False)
        shift = self.window_ > 1 and self.shift_windows
        noise = self._resolve_input_noise()
        if not shift and self.crop_fraction_ == 1.0:
            return TrainingData(X, X3, cell_lengths, targets, weights, soft, noise=noise)
        return TrainingData(X, X3, cell_lengths, targets, weights, soft, timesteps, lengths,
                            self.window_, shift, self.crop_fraction_, noise)

    def _resolve_input_noise(self):
        """``input_noise`` for ``scale_input`` and the fitted ``window_`` ("auto":
        see AUTO_INPUT_NOISE)."""
        if self.input_noise == "auto":
            return AUTO_INPUT_NOISE if self.scale_input and self.window_ == 1 else 0.0
        return float(self.input_noise)

    def _long_window(self):
        """Whether "auto" gives the fitted ``window_`` envelopes and crops."""
        return self._auto_long_window and self.window_ >= AUTO_LONG_WINDOW

    def _resolve_crop(self):
        """``crop_fraction`` for the fitted ``window_`` (1.0: no crops)."""
        if self.crop_fraction == "auto":
            return AUTO_CROP_FRACTION if self._long_window() else 1.0
        return float(self.crop_fraction)

    def _resolve_hidden_size(self):
        """``hidden_size`` for the model's outputs ("auto": see AUTO_HIDDEN_SIZE)."""
        if self.hidden_size == "auto":
            many = self._n_outputs() > AUTO_MANY_OUTPUTS
            return AUTO_MANY_HIDDEN_SIZE if many else AUTO_HIDDEN_SIZE
        return int(self.hidden_size)

    def _resolve_change_channels(self, n_steps):
        """``change_channels`` for sequences of at most ``n_steps`` real timesteps."""
        if self.change_channels == "auto":
            return n_steps > 1
        return bool(self.change_channels)

    def _check_resumable_channels(self):
        """Refuse to continue weights that read other channels than ``change_channels`` asks."""
        fitted = uses_changes(self)
        if self.change_channels != "auto" and bool(self.change_channels) != fitted:
            raise ValueError(
                f"Cannot continue training with change_channels={self.change_channels}: "
                f"the fitted weights read {'' if fitted else 'no '}change channels "
                f"(change_channels_={fitted}). Set change_channels={fitted} or "
                "'auto', or warm_start=False to train from scratch."
            )

    def _resolve_envelope(self):
        """``envelope_width`` for the fitted ``window_`` (0: no envelope channels)."""
        if self.envelope_width == "auto":
            return self.window_ if self._long_window() else 0
        return int(self.envelope_width) if int(self.envelope_width) >= 2 else 0

    def _check_resumable_envelope(self):
        """Refuse to continue weights that read other envelope channels than asked."""
        fitted = envelope_width(self)
        if self.envelope_width != "auto" and self._resolve_envelope() != fitted:
            raise ValueError(
                f"Cannot continue training with envelope_width={self.envelope_width}: "
                f"the fitted weights read envelopes of {fitted} timesteps "
                f"(envelope_width_={fitted}). Set envelope_width={fitted} or "
                "'auto', or warm_start=False to train from scratch."
            )

    def _resolve_alpha(self, n_samples):
        """``alpha`` for ``n_samples`` training sequences ("auto": see AUTO_*ALPHA*)."""
        if self.alpha == "auto":
            cap = AUTO_CROP_ALPHA_MAX if self.crop_fraction_ < 1.0 else self._auto_alpha_max
            return min(cap, AUTO_ALPHA_SCALE / n_samples)
        return float(self.alpha)

    def _resolve_window(self, lengths, weights):
        """``window`` for training sequences of real ``lengths`` and ``weights``."""
        if self.window == "auto":
            positive = weights > 0
            typical = lower_median(lengths[positive], weights[positive])
            return max(1, round(int(typical) / AUTO_WINDOW_STEPS))
        return max(1, min(int(self.window), int(lengths.max())))

    def _resolve_phases(self):
        """``window_phases`` for the fitted ``window_``."""
        if self.window_phases == "auto":
            return min(self.window_, AUTO_PHASES) if self.shift_windows else 1
        return min(int(self.window_phases), self.window_)

    def _mapped_input(self, X3, dtype, name="X"):
        """Sequences as the cell reads them in training, before windowing: mapped, cast."""
        maps = self._maps
        if maps.input_mean is None:
            return self._as_training_dtype(X3, dtype, name)
        standardised = (_scaling.standardised if self.engine == "numpy"
                        else _compiled_input.standardised)
        mapped = standardised(X3, maps.input_mean, maps.input_scale, dtype)
        return self._as_training_dtype(mapped, dtype, name, source=lambda: (
            (X3.astype(np.float64) - maps.input_mean) / maps.input_scale
        ))

    def _update_maps(self, X3, targets, weights, incremental, resume):
        """Fit the input and output maps (:mod:`~sklearn_fastgrnn._scaling`).

        A fresh fit (or a model without maps) fits them on its data; ``fit``
        with ``warm_start`` keeps the maps its weights are expressed in;
        ``partial_fit`` keeps running statistics over its calls and moves to
        new maps when they have moved materially (``_scaling.moved``): the
        weights are then re-expressed in the new maps, so the model predicts
        as before, and a first call with little data (one sequence) does not
        fix the standardisation for good.
        """
        moments = (
            self._input_moments(X3, weights) if self.scale_input else None,
            self._output_moments(targets, weights),
        )
        fresh = not resume or not hasattr(self, "_maps")
        if not fresh and not incremental:
            return
        if not fresh:
            moments = tuple(
                new if old is None or new is None else old.merge(new)
                for old, new in zip(getattr(self, "_moments", (None, None)), moments)
            )
        self._moments = moments
        mean, scale = moments[0].spread() if moments[0] is not None else (None, None)
        offset, spread = self._output_map(moments[1])
        maps = _scaling.Maps(mean, scale, offset, spread)
        if fresh or _scaling.moved(maps, self._maps):
            if not fresh:  # coefs_ is unfolded with the new maps, the average starts again
                self._trained_coefs = self._average = self._last_weights = None
            self._maps = maps

    def _check_input_offsets(self, dtype):
        """Warn when ``dtype`` cannot hold the raw input finely enough for the
        folded standardisation: a channel whose mean is many deviations from
        zero (an offset) loses its differences when the fitted model reads it
        in ``dtype`` (float32 rounds 1e9 to a multiple of 64)."""
        mean, scale = self._maps.input_mean, self._maps.input_scale
        if mean is None:
            return
        ratio = float((np.abs(mean) / scale).max())
        rounding = ratio * np.finfo(dtype).eps / 2
        if rounding > ROUNDING_LIMIT:
            warnings.warn(
                f"An input channel's mean is {ratio:.2g} times its standard deviation: "
                f"{dtype} rounds its raw values by up to {rounding:.2g} of a "
                "deviation, and the fitted model reads them raw (scale_input folds the "
                "standardisation into the weights), so predictions may lose accuracy. "
                "Subtract the offset from the input first (e.g. with StandardScaler or "
                "SequenceScaler), or fit with dtype='float64'.",
                UserWarning,
            )

    def _input_moments(self, X3, weights):
        """:class:`~._scaling.Moments` of each input channel (in C but with
        ``engine="numpy"``)."""
        if self.engine == "numpy":
            return _scaling.Moments.of(X3, weights, axis=(0, 1))
        return _compiled_input.moments(X3, weights)

    def _output_moments(self, targets, weights):
        """:class:`~._scaling.Moments` of the outputs' targets, or None (classes)."""
        return None

    def _output_map(self, moments):
        """``(offset, spread)`` of the outputs while training, or ``(None, None)``."""
        return None, None

    def _map_targets(self, targets):
        """Targets as the model trains on them (the inverse of ``_decode_targets``)."""
        return targets

    def _trained_coefs_to_resume(self):
        """The weights to continue training from, in the space training works in.

        The weights of the last training call when ``coefs_`` is still what
        they fold into (exact continuation), else ``coefs_`` unfolded.
        """
        maps = self._maps
        if maps.identity:
            return self.coefs_
        trained = getattr(self, "_trained_coefs", None)
        if trained is not None:
            folded = _scaling.fold(trained, maps)
            if folded.keys() == self.coefs_.keys() and all(
                np.array_equal(folded[key], self.coefs_[key]) for key in folded
            ):
                return trained
        return _scaling.unfold(self.coefs_, maps)

    def _public_coefs(self, trained):
        """``coefs_`` of weights ``trained`` (a dict): the maps folded in."""
        maps = getattr(self, "_maps", _scaling.Maps())
        return trained if maps.identity else _scaling.fold(trained, maps)

    # --------------------------------------------------------------- training
    def _layout(self):
        d, H = self.window_ * n_cell_channels(self), self.hidden_size_
        w_rank, u_rank = self._resolve_w_rank(d, H), self._int("u_rank")
        if w_rank is not None and w_rank > min(d, H):
            raise ValueError(
                f"w_rank={w_rank} is larger than allowed: W is ({d}, {H}) (window_ "
                f"times the channels the cell reads, by hidden_size), so its rank is "
                f"at most {min(d, H)}. "
                "Use a smaller w_rank, or None for full rank."
            )
        if u_rank is not None and u_rank > H:
            raise ValueError(
                f"u_rank={u_rank} is larger than allowed: U is ({H}, {H}), so "
                f"its rank is at most hidden_size = {H}. Use a smaller u_rank or "
                "None for full rank."
            )
        n_outputs = self._n_outputs()
        r_w, r_u = w_rank or H, u_rank or H
        n_params = (d + H) * r_w + 2 * H * r_u + H * n_outputs + 2 * H + n_outputs + 2
        if n_params > MAX_PARAMETERS:
            raise ValueError(
                f"hidden_size={H} gives a model of about {n_params:.3g} parameters "
                f"({4 * n_params / 2**30:.3g} GiB), more than the {MAX_PARAMETERS} an "
                "array can index. FastGRNN models are small: hidden sizes of 8 to 256 "
                "are typical."
            )
        return ParameterLayout(d, H, n_outputs, w_rank, u_rank)

    def _resolve_w_rank(self, d, H):
        """``w_rank`` for ``W`` of shape (d, H) ("auto": see AUTO_RANK_DIVISOR)."""
        if self.w_rank != "auto":
            return self._int("w_rank")
        if not envelope_width(self):
            return None
        rank = max(1, H // AUTO_RANK_DIVISOR)
        return rank if rank < min(d, H) else None

    def _new_optimizer(self, n_params, dtype):
        if self.solver == "adam":
            return Adam(n_params, dtype, self.beta_1, self.beta_2, self.epsilon)
        return SGD(n_params, dtype, self.momentum, self.nesterovs_momentum)

    def _resolve_learning_rate(self, n_samples):
        """``learning_rate`` for ``n_samples`` training sequences, and whether its
        last rate runs a fixed tail ("auto": see AUTO_ADAPTIVE_STEPS; adaptive
        with crops; on fewer steps an epoch with input noise, adaptive with a
        tail: the noised loss goes on falling by more than ``tol`` long after
        the accuracy has settled, and would not show a second plateau)."""
        if self.learning_rate != "auto":
            return self.learning_rate, False
        steps = math.ceil(n_samples / resolve_batch_size(self.batch_size, n_samples))
        if steps >= AUTO_ADAPTIVE_STEPS or self.crop_fraction_ < 1.0:
            return "adaptive", False
        if self._resolve_input_noise() > 0:
            return "adaptive", True
        return "constant", False

    def _resolve_lr_reductions(self, tail):
        """``max_lr_reductions`` ("auto": AUTO_LR_REDUCTIONS, with crops or a
        ``tail`` AUTO_CROP_LR_REDUCTIONS)."""
        if self.max_lr_reductions != "auto":
            return self._int("max_lr_reductions")
        if self.crop_fraction_ < 1.0 or tail:
            return AUTO_CROP_LR_REDUCTIONS
        return AUTO_LR_REDUCTIONS

    def _start_state(self, layout, dtype, resume, n_steps, incremental, n_samples):
        """:class:`StartState` to train from (never shared with ``self``).

        Hyper-parameters always come from the current ``get_params()``; a resumed
        run takes over the training state (moments, RNG, adaptive rate, stopping
        rule) when the model has one, and, when the model keeps the average of
        its weights, the optimiser's own last weights and the average so far.
        A model loaded from a weights file has none: it resumes its weights with
        a fresh optimiser. ``n_steps`` is the longest real sequence, which the
        chrono initialisation spreads memory over.
        """
        fitted_shapes = {k: np.shape(v) for k, v in getattr(self, "coefs_", {}).items()}
        if resume and fitted_shapes != layout.shapes:
            raise ValueError(
                f"Cannot continue training: the fitted weights have shapes "
                f"{fitted_shapes}, but the current parameters ask for "
                f"{layout.shapes}. Set warm_start=False to train from scratch."
            )
        has_state = resume and hasattr(self, "_optimizer")
        if has_state and self._optimizer_kind != self.solver:
            raise ValueError(
                f"Cannot continue training with solver={self.solver!r}: the model "
                f"was trained with {self._optimizer_kind!r}, whose state it keeps. "
                "Set warm_start=False to train from scratch."
            )
        optimizer = self._new_optimizer(layout.size, dtype)
        kind, tail = self._resolve_learning_rate(n_samples)
        schedule = LearningRateSchedule(
            kind, self.learning_rate_init, self.lr_decay, self._int("lr_decay_step"),
            self._resolve_lr_reductions(tail), tail,
        )
        average = WeightAverage(self.weight_averaging) if self.weight_averaging > 0 else None
        if has_state:
            optimizer.resume_from(self._optimizer)
            schedule.resume_from(self._schedule)
            rng, monitor = copy.deepcopy(self._rng), copy.deepcopy(self._monitor)
            monitor.keep_best = not incremental
            previous = getattr(self, "_average", None)
            if average is not None and previous is not None and previous.decay == average.decay:
                # coefs_ hold the average: go on from where the optimiser was
                flat = np.array(self._last_weights, dtype=dtype)
                average = previous.as_dtype(dtype)
            else:
                flat = layout.pack(self._trained_coefs_to_resume(), dtype)
            return StartState(flat, optimizer, rng, schedule, monitor, average)
        random_state = check_random_state(self.random_state)
        if resume:
            flat = layout.pack(self._trained_coefs_to_resume(), dtype)
        else:
            flat = init_parameters(
                layout, random_state, self.zeta_init, self.nu_init, dtype,
                scheme=self.init, n_timesteps=n_steps,
            )
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        self._split_seed = int(rng.integers(np.iinfo(np.int32).max))
        if not resume or not hasattr(self, "n_iter_"):
            self.n_iter_, self.t_ = 0, 0
            self.loss_curve_, self.history_ = [], []
            self.validation_scores_ = None
        return StartState(flat, optimizer, rng, schedule,
                          PlateauMonitor(self.tol, keep_best=not incremental), average)

    def _validation_set(self, X_val, y_val, sample_weight_val, dtype):
        """A user's ``X_val``/``y_val`` as a :class:`ValidationSet`."""
        if y_val is None:
            raise ValueError("X_val was given without y_val: pass both, or neither.")
        X_val, X3_val, lengths_val = validate_sequences(self, X_val, reset=False)
        check_consistent_length(X3_val, y_val)
        targets = self._encode_validation_targets(y_val)
        weights = check_sample_weight(
            sample_weight_val, X3_val, dtype=dtype, ensure_non_negative=True,
            allow_all_zero_weights=True,
        )
        if not weights.sum() > 0:
            raise ValueError(
                "sample_weight_val sums to zero: a validation set without weight "
                "cannot be scored. Give some validation sequences a positive weight."
            )
        X3_val, lengths_val = windowed(
            self._mapped_input(cell_values(self, X3_val), dtype, "X_val"), lengths_val,
            self.window_,
        )
        return ValidationSet(X_val, X3_val, lengths_val, self._map_targets(targets), weights)

    def _watched_data(self, data, validation, incremental):
        """Indices trained on, and the :class:`ValidationSet` watched (or None)."""
        X_val, y_val, _ = validation
        if X_val is None and y_val is not None:
            raise ValueError("y_val was given without X_val: pass both, or neither.")
        train = np.arange(len(data.X3))
        early = not incremental and (
            X_val is not None or self.early_stopping is True
            or (self.early_stopping == "auto" and len(data.X3) >= AUTO_EARLY_STOPPING_SAMPLES)
        )
        if not early:
            return train, None
        if self.validation_scores_ is None:
            self.validation_scores_ = []
        if X_val is not None:
            return train, self._validation_set(*validation, data.X3.dtype)
        train, idx = self._split_validation(data.targets, self._split_seed)
        if not data.weights[idx].sum() > 0:
            raise ValueError(
                "early_stopping held out a validation set whose sample weights are all "
                "zero, so it cannot be scored. Pass X_val and y_val (with "
                "sample_weight_val), or set early_stopping=False."
            )
        return train, ValidationSet(
            data.X[idx], data.X3[idx], data.lengths[idx], data.targets[idx],
            data.weights[idx],
        )

    @_callbacks.with_callbacks
    def _train(self, X, y, sample_weight, soft_targets, *, incremental, classes,
               validation):
        """The whole of ``fit``/``partial_fit``, on a working copy of the estimator."""
        tasks = _callbacks.FitTask(self, X, y, sample_weight,
                                   name="partial_fit" if incremental else "fit")
        resume = hasattr(self, "coefs_") and (incremental or self.warm_start)
        data = self._training_data(X, y, sample_weight, soft_targets, classes,
                                   incremental, resume)
        layout = self._layout()
        flat, optimizer, rng, schedule, monitor, average = self._start_state(
            layout, data.X3.dtype, resume, int(data.lengths.max()), incremental, len(data.X3)
        )
        # the weights the model keeps: their average over the epochs, or the last ones
        kept = flat if average is None or average.weights is None else average.weights
        train, val = self._watched_data(data, validation, incremental)
        early = val is not None
        run = TrainingRun(self, layout, data, self._training_loss(data), val)
        sparse_epochs = AUTO_MIN_EPOCHS if self.max_iter == "auto" else int(self.max_iter)
        run.sparsity = SparseTraining.for_run(self, layout, resume, sparse_epochs)
        if early and resume:  # resumed weights are the best so far: fit restored them
            monitor.best_weights = kept.copy()
        batch_size = resolve_batch_size(self.batch_size, len(train))
        steps_per_epoch = math.ceil(len(train) / batch_size)
        patience, plateau_patience = self._patience(steps_per_epoch)
        chance_level = self._chance_level(run, train)
        epochs = 1 if incremental else self._max_epochs(steps_per_epoch)
        tasks.begin(n_subtasks=epochs)

        start_loss = None if incremental else run.training_quality(flat, train).loss
        stop_reason = None
        interrupted = False
        for _ in range(epochs):
            tasks.begin_epoch()
            lr = schedule.rate(self.n_iter_)
            if run.sparsity is not None and run.sparsity.begin_epoch(flat, optimizer):
                monitor.reset()  # the support is frozen: earlier weights do not count
            start = time.perf_counter()
            try:
                loss = run.epoch(flat, optimizer, lr, train, batch_size, rng)
            except KeyboardInterrupt:
                stop_reason = self._interrupted(kept, monitor, early)
                interrupted = True
                break
            self.n_iter_ += 1
            self.t_ += len(train)
            settled = run.sparsity is None or run.sparsity.frozen
            # the average starts once the sparse support is frozen (zeros stay zeros)
            kept = average.update(flat) if average is not None and settled else flat
            record = self._record_epoch(run, flat, kept, loss, lr, monitor, early)
            record["seconds"] = time.perf_counter() - start
            at_chance = chance_level is not None and monitor.best >= chance_level
            wait = plateau_patience if at_chance else patience
            if not incremental and settled and schedule.tail_over(wait):
                stop_reason = record["event"] = (
                    f"stopped: {wait} epochs at the last learning rate ({lr:.3g})"
                )
            elif not incremental and settled and monitor.plateaued(wait):
                stop_reason = self._on_plateau(record, monitor, schedule, wait,
                                               steps_per_epoch)
            if tasks.end_epoch(lambda: self._public_coefs(layout.unpack(kept)), layout.size) \
                    and stop_reason is None:
                stop_reason = record["event"] = "stopped: a callback asked to stop"
            if self.verbose:
                run.report(record)
            if stop_reason is not None:
                break
        else:
            if not incremental:
                stop_reason = f"stopped: max_iter={epochs} epochs reached"
                warnings.warn(
                    f"Stochastic optimizer: maximum iterations ({epochs}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        last = flat
        flat, restored, end_quality = self._kept_weights(
            run, kept, monitor, train, early, chance_level, incremental or interrupted,
            kept is not last,
        )
        # coefs_ hold the average: keep where the optimiser is, to continue from
        averaged = flat is not last and not restored
        self._average, self._last_weights = (average, last) if averaged else (None, None)
        # an average, unless the spike guard restored the optimiser's weights of an epoch
        self._kept_average = kept is not last and (early or not restored)
        self._sparse_training = run.sparsity
        self.engine_ = run.engine.name
        self._commit(layout, flat, optimizer, rng, schedule, monitor, early, restored)
        self.stop_reason_ = stop_reason or "one partial_fit epoch"
        if not incremental:
            self._diagnose(end_quality or run.training_quality(flat, train), start_loss)
        if self.verbose and not incremental:
            print(f"Training {self.stop_reason_}; kept {self._kept_weights_text()}.",
                  flush=True)
        tasks.end()

    def _kept_weights_text(self):
        """What the fitted model holds, in words: "the weights of epoch N", or
        "the average of the weights up to epoch N" (``weight_averaging``)."""
        if getattr(self, "_kept_average", False):
            return f"the average of the weights up to epoch {self.best_epoch_}"
        return f"the weights of epoch {self.best_epoch_}"

    def _training_loss(self, data):
        """The task loss, with the distillation term when there are soft targets."""
        loss = self._task_loss()
        if data.soft is None:
            return loss
        return _losses.Distillation(
            loss, self.distillation_alpha, getattr(self, "distillation_temperature", 1.0)
        )

    def _record_epoch(self, run, flat, kept, loss, lr, monitor, early):
        """Score the epoch, show it to the stopping rule, and append its history.

        ``flat`` are the optimiser's weights, whose mean loss over the epoch is
        ``loss``; ``kept`` the weights the model would keep (their average over
        the epochs, or ``flat``), which early stopping scores and restores.
        """
        record = {"epoch": self.n_iter_, "train_loss": loss, "val_loss": None,
                  "val_score": None, "learning_rate": lr, "event": None}
        if early:
            record["val_loss"], record["val_score"] = run.evaluate(kept)
            self.validation_scores_.append(record["val_score"])
            watched = record["val_loss"] if self.scoring == "loss" else -record["val_score"]
            monitor.update(watched, self.n_iter_, kept)
        else:
            monitor.update(loss, self.n_iter_, flat)
        self.loss_curve_.append(loss)
        self.history_.append(record)
        return record

    def _on_plateau(self, record, monitor, schedule, patience, steps_per_epoch):
        """Reduce the rate (adaptive) or stop; returns the stop reason or None."""
        monitor.bad_epochs = 0
        if schedule.on_plateau():
            record["event"] = f"learning rate reduced to {schedule.current:.3g}"
            return None
        record["event"] = (
            f"stopped: no improvement of tol={self.tol} for {patience} epochs "
            f"({patience * steps_per_epoch} optimiser steps)"
        )
        return record["event"]

    def _patience(self, steps_per_epoch):
        """Patience in epochs, and the patience while the loss is still at chance."""
        if self.n_iter_no_change == "auto":
            return (
                patience_epochs(10, steps_per_epoch, AUTO_MIN_PATIENCE_STEPS),
                patience_epochs(10, steps_per_epoch, AUTO_PLATEAU_PATIENCE_STEPS),
            )
        return (int(self.n_iter_no_change),) * 2

    def _chance_level(self, run, train):
        """The watched loss below which training has left its initial plateau.

        ``AUTO_PLATEAU_LEVEL`` times the loss of the best constant prediction
        (of the validation set when early stopping watches it); None when the
        patience is explicit or a score is watched.
        """
        if self.n_iter_no_change != "auto" or (run.val is not None and self.scoring != "loss"):
            return None
        if run.val is not None:
            targets, weights = run.val.targets, run.val.weights
        else:
            targets, weights = run.data.targets[train], run.data.weights[train]
        return AUTO_PLATEAU_LEVEL * run.task_loss.baseline(targets, weights)

    def _max_epochs(self, steps_per_epoch):
        if self.max_iter == "auto":
            scale = AUTO_CROP_BUDGET if self.crop_fraction_ < 1.0 else 1
            return scale * max(AUTO_MIN_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps_per_epoch))
        return int(self.max_iter)

    def _kept_weights(self, run, kept, monitor, train, early, chance_level, last_only,
                      averaged):
        """The weights the model keeps: ``(weights, restored, their Quality or None)``.

        ``kept`` are the last weights, or their average over the epochs
        (``averaged``). With early stopping, the best validation epoch's,
        unless the validation loss never left chance level (then the
        validation set tells nothing and ``kept`` stay). Without it, a late
        loss spike can leave the last weights broken with no improvement left
        to stop on: the best training-loss epoch's weights are restored when
        they classify (or fit) the training data better than the last ones (a
        tie keeps the last ones, which trained longer), or, against an
        average, when the average lost more than half of what the best
        weights gained over the best constant prediction (an average is the
        better estimate unless it collapsed). ``last_only`` (partial_fit, an
        interrupt) keeps ``kept``.
        """
        if early:
            restore = monitor.best_weights is not None and not (
                chance_level is not None and monitor.best >= chance_level
            )
            return (monitor.best_weights if restore else kept), restore, None
        if last_only:
            return kept, False, None
        end = run.training_quality(kept, train)
        if monitor.best_weights is None or (monitor.best_epoch == self.n_iter_ and not averaged):
            return kept, False, end
        best = run.training_quality(monitor.best_weights, train)
        if averaged:
            collapsed = end.quality < (best.quality + best.baseline) / 2
        else:
            collapsed = best.quality > end.quality
        if collapsed:
            return monitor.best_weights, True, best
        return kept, False, end

    def _interrupted(self, flat, monitor, early):
        """Ctrl-C: keep the best (or last, finite) weights with a warning."""
        keep_best = early and monitor.best_weights is not None
        if not keep_best and not np.isfinite(flat).all():
            raise KeyboardInterrupt
        warnings.warn(
            f"Training interrupted by the user in epoch {self.n_iter_ + 1}; keeping "
            + ("the best weights so far." if keep_best
               else "the last weights (or their average over the epochs: "
                    "weight_averaging), which are finite."),
            UserWarning,
        )
        return f"interrupted by the user in epoch {self.n_iter_ + 1}"

    def _divergence_message(self, what):
        """The error of a diverged training step: ``what`` happened, and the cure."""
        if "relu" in (self.gate_nonlinearity, self.update_nonlinearity):
            advice = (
                "A relu non-linearity is unbounded: the hidden state can grow without "
                "limit over the timesteps and overflow. Use gate_nonlinearity='sigmoid' "
                "(or 'quant_sigmoid') and update_nonlinearity='tanh' (or 'quant_tanh'), "
                "or scale the input and lower learning_rate_init."
            )
        else:
            advice = (
                "Scale the input (StandardScaler or SequenceScaler), lower "
                "learning_rate_init, or set clip_grad_norm."
            )
        return (
            f"Training diverged: {what}. The model was left as it was before this "
            f"call. {advice}"
        )

    def _diagnose(self, quality, start_loss):
        """Warn when the fitted model learned nothing, or ended worse than it began.

        ``quality`` is the :class:`~._training.Quality` of the weights kept.
        """
        if quality.loss > 2.0 * start_loss + 0.1:
            warnings.warn(
                f"Training ended with a training loss of {quality.loss:.4g}, far above "
                f"the {start_loss:.4g} of the weights it started from: the optimiser "
                "overshoots. Lower learning_rate_init.",
                ConvergenceWarning,
            )
        elif quality.quality <= quality.baseline + 1e-9:
            warnings.warn(self._no_better_message(quality), ConvergenceWarning)

    def _commit(self, layout, flat, optimizer, rng, schedule, monitor, early, restored):
        """Assign the trained state (the only place ``fit`` writes ``coefs_``)."""
        trained = layout.unpack(flat)
        self.coefs_ = self._public_coefs(trained)
        self._trained_coefs = None if self._maps.identity else trained
        self._optimizer, self._rng, self._schedule = optimizer, rng, schedule
        monitor.best_weights = None  # restored already; not kept in the model file
        self._monitor = monitor
        self._optimizer_kind = self.solver
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        self.best_epoch_ = self.n_iter_
        self.best_loss_ = self.best_validation_score_ = None
        if restored:
            self.best_epoch_ = monitor.best_epoch
        if early:
            self.best_validation_score_ = self.history_[self.best_epoch_ - 1]["val_score"]
        elif self.loss_curve_:
            self.best_loss_ = min(self.loss_curve_)
        self.n_params_, self.model_size_bytes_ = _size.fitted_size(self)

    def _fit(self, X, y, sample_weight, soft_targets, *, incremental, classes=None,
             validation=(None, None, None)):
        """Train a working copy of ``self`` and publish its state in one assignment.

        A failed call publishes nothing, so ``self`` stays exactly as it was, and
        a ``predict`` in another thread sees the old model or the new one.
        """
        work = object.__new__(type(self))
        work.__dict__ = {
            key: list(value) if isinstance(value, list) else value
            for key, value in self.__dict__.items()
        }
        with one_blas_thread():  # the engine's products are too small to share
            work._train(
                X, y, sample_weight, soft_targets, incremental=incremental,
                classes=classes, validation=validation,
            )
        self.__dict__ = work.__dict__
        return self

    def _partial_fit(self, X, y, classes, sample_weight, soft_targets):
        """``partial_fit``: parameters changed by ``set_params`` are checked too.

        (scikit-learn validates the parameters of ``partial_fit`` only on the
        first call.)
        """
        if hasattr(self, "coefs_"):
            self._validate_params()
        return self._fit(
            X, y, sample_weight, soft_targets, incremental=True, classes=classes
        )

    # ------------------------------------------------------------- prediction
    def _check_nonlinearities(self):
        """Prediction reads the non-linearities from the parameters: check them."""
        for name in ("gate_nonlinearity", "update_nonlinearity"):
            if getattr(self, name) not in NONLINEARITIES:
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be one of "
                    f"{sorted(NONLINEARITIES)}, got {getattr(self, name)!r}."
                )

    def _raw_outputs(self, X):
        """The cell's outputs ``h_T @ V + bias_out`` for ``X``, shape (n, n_outputs)."""
        # plain NumPy arrays skip scikit-learn's validation (same arrays, same
        # errors); the stacked weights are made once per coefs_ and dtype
        valid = light_sequences(self, X) if "coefs_" in self.__dict__ else None
        if valid is None:
            check_is_fitted(self)
            _, X3, lengths = validate_sequences(self, X, reset=False)
        else:
            X3, lengths = valid
        self._check_nonlinearities()
        cells = cell_values(self, X3)
        window = getattr(self, "window_", 1)
        dtype = np.float32 if X3.dtype == np.float32 else np.float64
        predictor = predictor_for(
            self, self.coefs_, self.gate_nonlinearity, self.update_nonlinearity, dtype,
            self.readout, self.engine, make_engine,
        )
        phases = getattr(self, "window_phases_", 1)
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = predictor.outputs(*windowed(cells, lengths, window))
            if phases > 1:  # the mean of the phases' outputs (of their readouts)
                for shift in phase_shifts(window, phases)[1:]:
                    outputs += predictor.outputs(*windowed(cells, lengths, window, shift))
                outputs /= phases
        if not np.isfinite(outputs).all():
            self._warn_not_finite(outputs, lengths)
        return outputs

    def _warn_not_finite(self, outputs, lengths):
        """Refuse damaged weights; else say which sequences overflowed (a silent NaN
        is the worst answer)."""
        for key, value in self.coefs_.items():
            if not np.isfinite(value).all():
                raise ValueError(
                    f"coefs_[{key!r}] holds NaN or infinity: the model is damaged (or "
                    "was edited), and its predictions would be NaN. Refit it, or load "
                    "an undamaged copy."
                )
        bad = np.flatnonzero(~np.isfinite(outputs).all(axis=1))
        warnings.warn(
            f"The hidden state overflowed for {len(bad)} of {len(outputs)} sequences "
            f"(the first is sample {bad[0]}, of {int(lengths[bad[0]])} timesteps; "
            f"training saw up to {self.n_timesteps_}): their outputs are NaN or "
            "infinite. "
            + ("A relu non-linearity is unbounded over long sequences; "
               if "relu" in (self.gate_nonlinearity, self.update_nonlinearity) else "")
            + "Check the model's weights, and scale the input as in training.",
            UserWarning,
        )

    def streamer(self, n_streams=1, dtype="float64"):
        """A :class:`~sklearn_fastgrnn.streaming.Streamer` of this model: one timestep at a time.

        Parameters
        ----------
        n_streams : int, default=1
            Independent streams fed together (one row each per update).
        dtype : {"float64", "float32"}, default="float64"
            Arithmetic precision.

        Returns
        -------
        Streamer
            ``update(x)`` gives, after every timestep, what the prediction of
            each stream's sequence so far is.
        """
        check_is_fitted(self)
        return Streamer(self, n_streams, dtype)

    def _staged_outputs(self, X):
        """Outputs after every timestep, (n, T, n_outputs), NaN after each end.

        Returns the outputs and the real lengths.
        """
        check_is_fitted(self)
        self._check_nonlinearities()
        _, X3, lengths = validate_sequences(self, X, reset=False)
        dtype = np.float32 if X3.dtype == np.float32 else np.float64
        cell = CellStream(
            self.coefs_, self.gate_nonlinearity, self.update_nonlinearity, self.readout,
            getattr(self, "window_", 1), len(X3), dtype,
            offsets_of(self), getattr(self, "window_phases_", 1), envelope_width(self),
        )
        n, T, _ = X3.shape
        staged = np.full((n, T, cell.V.shape[1]), np.nan)
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(int(lengths.max())):
                cell.push(X3[:, t])
                live = t < lengths
                staged[live, t] = cell.outputs()[live]
        return staged, lengths

    def summary(self):
        """Parameters, non-zeros and bytes of every tensor, and the size in KB.

        Returns
        -------
        str
            A printable table (see :func:`sklearn_fastgrnn.compression.summary`).
        """
        return _size.summary(self)

    # ------------------------------------------------------- scikit-learn glue
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never add to the live __dict__
        state["_sklearn_fastgrnn_version"] = __version__
        return state

    def __setstate__(self, state):
        version = state.pop("_sklearn_fastgrnn_version", "pre-0.1")
        if version != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=__version__,
                    original_version=version,
                )
            )
        for name, value in self._legacy_params.items():
            state.setdefault(name, value)
        if "coefs_" in state:  # a model of release 0.1.0 read no change channels
            state.setdefault("change_channels_", False)
            if state["change_channels_"] and state.get("change_offsets_") is None:
                raise ValueError(
                    f"This {type(self).__name__} reads change channels but has no "
                    "change_offsets_: it was pickled by a development build of "
                    f"sklearn_fastgrnn (version {version}) from before the changes' "
                    "logarithms. Retrain it with this version."
                )
            state.setdefault("change_offsets_", None)
            state.setdefault("window_phases_", 1)
            state.setdefault("envelope_width_", 0)
            state.setdefault("crop_fraction_", 1.0)
            state.setdefault("hidden_size_", np.shape(state["coefs_"]["V"])[0])
        monitor = state.get("_monitor")
        if monitor is not None and "split_seed" in monitor.__dict__:
            # release 0.1.0 kept the seed of the validation split on the monitor
            state.setdefault("_split_seed", monitor.__dict__.pop("split_seed"))
            monitor.__dict__.pop("sign", None)
        super().__setstate__(state)


@functools.lru_cache(maxsize=None)
def _parameter_names(cls, init):
    """The sorted parameter names of ``cls`` with constructor ``init``."""
    return tuple(super(BaseFastGRNN, cls)._get_param_names())


def check_finite_targets(values, name, purpose):
    """Raise a ValueError naming the first row of ``values`` with NaN or inf."""
    if not np.isfinite(values).all():
        row = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0]
        raise ValueError(
            f"{name} contains NaN or inf (first in row {row}); it must {purpose}."
        )
