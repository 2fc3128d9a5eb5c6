"""Warnings of sklearn_fastgrnn."""

__all__ = ["InconsistentVersionWarning", "LayoutWarning"]


class InconsistentVersionWarning(UserWarning):
    """A model file was written by another version of sklearn_fastgrnn.

    Parameters
    ----------
    estimator_name : str
    current_version, original_version : str
    """

    def __init__(self, *, estimator_name, current_version, original_version):
        self.estimator_name = estimator_name
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self):
        return (
            f"Trying to unpickle {self.estimator_name} from sklearn_fastgrnn version "
            f"{self.original_version} when using version {self.current_version}. "
            "This might lead to breaking code or invalid results. Use at your own "
            "risk, or retrain the model with this version."
        )


class LayoutWarning(UserWarning):
    """A 3D ``X`` looks like ``(n_samples, n_channels, n_timesteps)``.

    The estimators read 3D ``X`` as ``(n_samples, n_timesteps, n_channels)``;
    aeon and sktime hold series the other way round. ``fit`` warns when the
    channels outnumber the timesteps many times over (a univariate series in
    aeon's layout is one timestep of as many channels as it has values).
    Filter it out when the layout is as intended.
    """
