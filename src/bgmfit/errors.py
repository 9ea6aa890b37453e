"""Errors a user can cause and fix. The CLI prints them as one line, never a traceback."""


class BgmfitError(Exception):
    """Base class for every error that is the user's input, not a bug in bgmfit."""


class ConfigError(BgmfitError):
    """A missing, unknown or out-of-range key in ``params.yaml``."""


class ManifestError(BgmfitError):
    """One or more manifest rows are invalid; the message lists each with its line number."""


class AudioDecodeError(BgmfitError):
    """An audio file (or upload) is empty, truncated, or not audio at all."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class UnusableAudioError(AudioDecodeError):
    """Audio that decodes, but whose samples are not finite or far past any real level."""


class UnsupportedAudioError(AudioDecodeError):
    """Content that is not audio in an accepted format (judged by its bytes, not its name)."""


class RequestError(BgmfitError):
    """A request the service refuses, with its HTTP status (400, 413, 415, 422, or 503)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)

    def __reduce__(self):  # it crosses from the decoding processes (serving.isolation) intact
        return type(self), (self.status, str(self))
