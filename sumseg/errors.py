"""Exception types. Every error names the file (or object) and what is wrong with it."""


class SumsegError(Exception):
    """Base class of every error sumseg raises on purpose."""


class CheckpointError(SumsegError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class DataError(SumsegError):
    """An input file (image, mask, annotation JSON) is unreadable or malformed."""


class ConfigError(SumsegError):
    """A configuration value or command-line argument is invalid."""


class TrainingError(SumsegError):
    """Training cannot go on (non-finite loss, a run folder that cannot be resumed)."""
