"""The errors fleet reports, each with the exit code of the contract (see README)."""


class FleetError(Exception):
    exit_code = 1

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result  # what the operation got to, for --json


class OperationFailed(FleetError):
    """The operation failed; fleet restored the previous state. Exit 1."""
    exit_code = 1


class BadInput(FleetError):
    """Bad input; nothing changed. Exit 2."""
    exit_code = 2


class Unreachable(FleetError):
    """Docker or Consul unreachable; nothing changed. Exit 3."""
    exit_code = 3


class TimedOut(FleetError):
    """A wait (`fleet status --wait --timeout`) ran out with the rollout still going; nothing changed. Exit 124,
    as timeout(1)."""
    exit_code = 124
