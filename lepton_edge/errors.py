"""The one small error hierarchy. Every message says what failed, what was expected, what was
found, and how to fix it; the CLI prints `str(err)` on one line and exits with `exit_code`."""

from __future__ import annotations


class LeptonError(Exception):
    """Base of every error lepton-edge raises on purpose."""

    exit_code = 1


class ConfigError(LeptonError):
    """A config file (or CLI argument) is wrong; the message names the field."""

    exit_code = 2


class ModelError(LeptonError):
    """A model or artifact is missing, corrupt, or does not match its manifest."""

    exit_code = 3


class SourceError(LeptonError):
    """A camera or video source cannot be opened or read."""

    exit_code = 4


class BackendUnavailableError(LeptonError):
    """An inference backend was asked for but cannot run here (missing package or device)."""

    exit_code = 5


class CompileError(LeptonError):
    """The offline compiler could not produce an artifact (bad input or failed accuracy gate)."""

    exit_code = 6


class MessageError(LeptonError):
    """A ZeroMQ payload is not a valid lepton-edge message."""

    exit_code = 7
