"""FastGRNNRegressor: real-valued outputs of sequences on the shared base."""

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_array

from . import _losses, _scaling
from ._base import AUTO_REGRESSION_ALPHA_MAX, BaseFastGRNN, check_finite_targets, docstring

# loss name -> (loss object, out_activation_: the map from outputs to predictions)
LOSSES = {
    "squared_error": (_losses.SquaredError, "identity"),
    "poisson": (_losses.PoissonDeviance, "exp"),
}


class FastGRNNRegressor(RegressorMixin, BaseFastGRNN):
    _parameter_constraints = {
        **BaseFastGRNN._parameter_constraints,
        "loss": [StrOptions(set(LOSSES))],
    }
    _numeric_targets = True
    # the regression benchmark's real sets are read in windows of fewer than 4
    # timesteps, and its long synthetic tasks lost with envelopes (the adding
    # problem at 400 steps: R² 0.982 to 0.947) and would with crops (a crop
    # drops marked values): neither unless asked for
    _auto_long_window = False
    # the classifier's cap (1e-2) measured mixed on the regression benchmark's
    # real sets (CardanoSentiment R² -0.68 to -0.91, Covid3Month 0.120 to 0.136)
    _auto_alpha_max = AUTO_REGRESSION_ALPHA_MAX

    def __init__(
        self,
        hidden_size="auto",
        *,
        loss="squared_error",
        n_timesteps=None,
        window="auto",
        shift_windows=True,
        crop_fraction="auto",
        input_noise="auto",
        window_phases="auto",
        envelope_width="auto",
        change_channels="auto",
        readout="last",
        scale_input=True,
        engine="auto",
        gate_nonlinearity="sigmoid",
        update_nonlinearity="tanh",
        w_rank="auto",
        u_rank=None,
        init="chrono",
        zeta_init=1.0,
        nu_init=-4.0,
        solver="adam",
        learning_rate="auto",
        learning_rate_init=0.01,
        max_lr_reductions="auto",
        lr_decay=0.1,
        lr_decay_step=50,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha="auto",
        clip_grad_norm=5.0,
        weight_averaging=0.9,
        batch_size="auto",
        max_iter="auto",
        shuffle=True,
        random_state=None,
        dtype="float32",
        tol=1e-4,
        n_iter_no_change="auto",
        early_stopping="auto",
        scoring="loss",
        validation_fraction=0.1,
        warm_start=False,
        verbose=0,
        distillation_alpha=0.5,
        sparsity_w=1.0,
        sparsity_u=1.0,
        sparsity_phases=(0.25, 0.5),
        iht_interval=15,
    ):
        self.hidden_size = hidden_size
        self.loss = loss
        self.n_timesteps = n_timesteps
        self.window = window
        self.shift_windows = shift_windows
        self.crop_fraction = crop_fraction
        self.input_noise = input_noise
        self.window_phases = window_phases
        self.envelope_width = envelope_width
        self.change_channels = change_channels
        self.readout = readout
        self.scale_input = scale_input
        self.engine = engine
        self.gate_nonlinearity = gate_nonlinearity
        self.update_nonlinearity = update_nonlinearity
        self.w_rank = w_rank
        self.u_rank = u_rank
        self.init = init
        self.zeta_init = zeta_init
        self.nu_init = nu_init
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_lr_reductions = max_lr_reductions
        self.lr_decay = lr_decay
        self.lr_decay_step = lr_decay_step
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.alpha = alpha
        self.clip_grad_norm = clip_grad_norm
        self.weight_averaging = weight_averaging
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.verbose = verbose
        self.distillation_alpha = distillation_alpha
        self.sparsity_w = sparsity_w
        self.sparsity_u = sparsity_u
        self.sparsity_phases = sparsity_phases
        self.iht_interval = iht_interval

    # ------------------------------------------------------------- targets
    def _check_values(self, y, name):
        """``y`` (float, 2D) finite, and non-negative for Poisson."""
        check_finite_targets(y, name, "hold finite numbers")
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError(
                f"loss='poisson' needs non-negative {name} (counts or rates); {name} has "
                "a negative value. Use loss='squared_error'."
            )

    def _target_weights(self, targets, weights, incremental):
        """A Poisson ``fit`` needs some positive target of positive weight per output."""
        if self.loss == "poisson" and not incremental and not (weights @ targets > 0).all():
            raise ValueError(
                "loss='poisson' needs, in every output, a positive y of positive "
                "sample_weight: a rate that is zero for all the weighted data cannot be "
                "fitted (its logarithm is -inf). Use loss='squared_error'."
            )
        return weights

    def _encode_targets(self, y, classes, incremental, resume):
        """Set ``n_outputs_`` and ``out_activation_``; ``y`` as (n, n_outputs) floats."""
        y = np.asarray(y, dtype=np.float64)
        y2 = y.reshape(len(y), -1)
        self._check_values(y2, "y")
        if (incremental or resume) and hasattr(self, "n_outputs_") and (
            y2.shape[1] != self.n_outputs_
        ):
            raise ValueError(
                f"y has {y2.shape[1]} outputs, but the model was trained with "
                f"{self.n_outputs_}. Pass the same outputs, or set warm_start=False "
                "(fit) to start over."
            )
        resumed_loss = getattr(self, "_loss_name", self.loss)
        if (incremental or resume) and hasattr(self, "coefs_") and resumed_loss != self.loss:
            raise ValueError(
                f"Cannot continue training with loss={self.loss!r}: the model was "
                f"trained with {resumed_loss!r}. Set warm_start=False to train from scratch."
            )
        self.n_outputs_ = y2.shape[1]
        self.out_activation_ = LOSSES[self.loss][1]
        self._loss_name = self.loss
        return y2

    def _encode_validation_targets(self, y_val):
        y_val = check_array(y_val, ensure_2d=False, dtype=np.float64, input_name="y_val")
        y2 = y_val.reshape(len(y_val), -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y_val has {y2.shape[1]} outputs, y has {self.n_outputs_}."
            )
        self._check_values(y2, "y_val")
        return y2

    def _output_moments(self, targets, weights):
        return _scaling.Moments.of(targets, weights, axis=0)

    def _output_map(self, moments):
        """Standardise each output (Poisson: divide by its mean) while training."""
        if self._loss_name == "poisson":
            mean = _scaling.within_float32(moments.mean)
            offset = np.log(np.where(mean > 0, mean, 1.0))  # all zero so far: no map
            return offset, np.ones_like(mean)
        return moments.spread()

    def _map_targets(self, targets):
        maps = self._maps
        if self._loss_name == "poisson":
            return targets / np.exp(maps.output_offset)
        return (targets - maps.output_offset) / maps.output_spread

    def _decode_targets(self, targets):
        maps = self._maps
        if self._loss_name == "poisson":
            y = targets * np.exp(maps.output_offset)
        else:
            y = targets * maps.output_spread + maps.output_offset
        return y.ravel() if self.n_outputs_ == 1 else y

    def _n_outputs(self):
        return self.n_outputs_

    def _task_loss(self):
        return LOSSES[self._loss_name][0]()

    def _check_soft_targets(self, soft_targets, n_samples, dtype):
        """A teacher's predictions, shaped as ``y``."""
        soft = check_array(
            soft_targets, dtype=np.float64, ensure_2d=False, ensure_all_finite=False,
            input_name="soft_targets",
        )
        soft = soft.reshape(len(soft), -1)
        if soft.shape != (n_samples, self.n_outputs_):
            raise ValueError(
                f"soft_targets has shape {soft.shape}, expected ({n_samples}, "
                f"{self.n_outputs_}): the teacher's prediction of every output of "
                "every sample."
            )
        self._check_values(soft, "soft_targets")
        return soft

    def _split_validation(self, targets, seed):
        """(train, validation) indices: a random ``validation_fraction``, at least one."""
        n = len(targets)
        k = min(n - 1, max(1, round(self.validation_fraction * n)))
        val = np.sort(np.random.default_rng(seed).choice(n, k, replace=False))
        return np.setdiff1d(np.arange(n), val), val

    def _no_better_message(self, quality):
        return (
            f"The fitted model predicts its own training data no better than "
            f"predicting the mean of y (R² {quality.quality:.3f}): it has not "
            "learned. Scale the input (SequenceScaler or StandardScaler), train "
            "longer (max_iter), try another learning_rate_init, or a larger "
            "hidden_size."
        )

    # ------------------------------------------------------------- training
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, soft_targets=None, *, X_val=None,
            y_val=None, sample_weight_val=None):
        """Train on sequences ``X`` with targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            Sequences, NaN-padded at the end when of variable length (see the
            class docstring for the 2D layouts).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; normalised to sum 1 within each mini-batch.
        soft_targets : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            A teacher's predictions of ``y``: switches on distillation, the
            loss becoming ``distillation_alpha * loss(soft_targets) + (1 -
            distillation_alpha) * loss(y)``.
        X_val, y_val : array-like, default=None
            A validation set of your own, in the layout of ``X``: switches on
            early stopping on it (whatever ``early_stopping`` says), and no
            part of ``X`` is held out.
        sample_weight_val : array-like of shape (n_val_samples,), default=None
            Weights of the validation sequences.

        Returns
        -------
        self
        """
        return self._fit(
            X, y, sample_weight, soft_targets, incremental=False,
            validation=(X_val, y_val, sample_weight_val),
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, soft_targets=None):
        """Run one epoch over ``X``, continuing from the current state.

        The optimiser state is kept between calls (also through
        ``joblib.dump``/``joblib.load``); the first call fixes how the targets
        are standardised. ``early_stopping`` does not apply.

        Parameters
        ----------
        X, y, sample_weight, soft_targets
            As in :meth:`fit`.

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, None, sample_weight, soft_targets)

    # ------------------------------------------------------------- prediction
    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs).

        The outputs ``h_T @ V + bias_out`` (``exp`` of them with
        ``loss="poisson"``); one column is returned as a 1D array.
        """
        outputs = self._raw_outputs(X)
        if self.out_activation_ == "exp":
            with np.errstate(over="ignore"):
                outputs = np.exp(outputs)
        return outputs.ravel() if self.n_outputs_ == 1 else outputs

    def _stream_predictions(self, outputs):
        if self.out_activation_ == "exp":
            with np.errstate(over="ignore"):
                outputs = np.exp(outputs)
        return outputs[..., 0] if self.n_outputs_ == 1 else outputs

    def staged_predict(self, X):
        """The prediction after every timestep of each sequence.

        Entry ``[i, t]`` is what :meth:`predict` gives for the first ``t + 1``
        timesteps of sequence ``i``.

        Returns
        -------
        ndarray of shape (n_samples, n_timesteps) or (n_samples, n_timesteps, n_outputs)
            NaN after the end of each sequence (at its NaN padding).
        """
        staged, _ = self._staged_outputs(X)
        return self._stream_predictions(staged)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags


FastGRNNRegressor.__doc__ = docstring(
    """FastGRNN sequence regressor trained by exact backpropagation through time.

    The cell of :class:`FastGRNNClassifier`, read out by a linear layer::

        pre_t = x_t @ W + h_{{t-1}} @ U
        z_t   = gate(pre_t + bias_gate)
        c_t   = update(pre_t + bias_update)
        h_t   = (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t + z_t * h_{{t-1}}
        y     = h_T @ V + bias_out            (exp(...) with loss="poisson")

    ``y`` may have several outputs, shape (n_samples, n_outputs). Training
    standardises each output (mean 0, variance 1; Poisson: divided by its
    mean) and folds the map into ``V`` and ``bias_out`` at the end, so targets
    of any scale train alike and ``coefs_`` predict raw targets; the losses
    in ``loss_curve_`` and ``history_`` are of the standardised targets (0.5
    for a model predicting the mean with ``loss="squared_error"``).

    The loss of a mini-batch is the weighted mean over its samples of
    ``loss``, averaged over the outputs, plus ``(alpha / 2) * sum(M ** 2)`` over
    the entries of the weight matrices ``M`` in {{``W`` (or ``W1``, ``W2``),
    ``U`` (or ``U1``, ``U2``), ``V``}}; biases, ``zeta`` and ``nu`` are not
    penalised.

    Parameters
    ----------
{parameters}
    loss : {{"squared_error", "poisson"}}, default="squared_error"
        "squared_error": half the squared error, as ``MLPRegressor``;
        "poisson": half the Poisson deviance of ``exp(outputs)``, for
        non-negative counts or rates.

    Attributes
    ----------
    n_outputs_ : int
        Outputs of ``y``.
    out_activation_ : {{"identity", "exp"}}
        The map from the outputs to the predictions.
{attributes}

    Notes
    -----
{notes}
    """,
    constant="predicting the mean of ``y``",
    validation_split="a random ``validation_fraction`` of the data",
    quality="R²",
    envelope_auto=(
        "0 (no envelope: the long synthetic tasks of the\n        regression "
        "benchmark lost with it, and none of its real sets is read\n        in "
        "windows of 4 timesteps or more)"
    ),
    crop_auto=(
        "1.0 (no crops: the target of a regression, a sum or a\n        "
        "level, often hangs on the whole sequence)"
    ),
    outputs_named="targets",
    alpha_auto_max="5e-3 (reached at 200 sequences)",
)
