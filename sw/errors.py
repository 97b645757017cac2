"""What can go wrong between the host and a board, as exceptions with one clear line each.

Every error the host driver raises is a :class:`HostError`; the command-line tools print
its message (one line) and exit non-zero.
"""

__all__ = ["HostError", "TransportError", "NoSuchPort", "PortPermission", "NoResponse",
           "BoardMismatch", "CommandFailed", "ImageDoesNotFit", "SimulationError"]


class HostError(Exception):
    """Base of every error the host driver raises; ``str(error)`` is one line."""


class TransportError(HostError):
    """The byte pipe to the board could not be opened or broke."""


class NoSuchPort(TransportError):
    """The serial port named does not exist."""


class PortPermission(TransportError):
    """The serial port exists but this user may not open it (or another program holds it)."""


class NoResponse(HostError):
    """The board did not answer a request in time (after any retries)."""


class BoardMismatch(HostError):
    """The device answers, but not as a spikestream SoC of this protocol version."""


class CommandFailed(HostError):
    """The board answered a request with an error status.

    Attributes
    ----------
    status : spikestream.protocol.LinkStatus or int
    command : spikestream.protocol.Cmd
    """

    def __init__(self, message, *, status, command):
        super().__init__(message)
        self.status = status
        self.command = command


class ImageDoesNotFit(HostError):
    """The network image is too large for the board's core (nothing was sent)."""


class SimulationError(TransportError):
    """The simulated board could not be built or started, or it stopped."""
