"""Errors a user can cause. Each carries one sentence that says what to do about it."""


class LazarusError(Exception):
    """Base class: the message is a single, user-facing line."""


class ModelNotFoundError(LazarusError):
    """The model is neither a local model directory nor a (cached) Hugging Face repository."""


class ModelLoadError(LazarusError):
    """The model exists but could not be loaded (corrupt config or weights)."""


class UnsupportedModelError(LazarusError):
    """The architecture is one the lens has not been verified for."""


class InvalidRequestError(LazarusError):
    """The request does not fit the model (layer out of range, bad top_k, empty prompt...)."""


class TokenResolutionError(InvalidRequestError):
    """A tracked token string yields no token."""
