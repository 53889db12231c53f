"""User-facing errors: anything a user can fix (bad file, bad config) raises `UserError`.

The CLI prints these as one line and exits with code 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: the message names the file, line or field and what was expected."""

    exit_code = 2


class TrainingError(Exception):
    """A run that must stop (e.g. a non-finite loss); the message names the offending examples."""

    exit_code = 1


class RequestsFailed(UserError):
    """Every request of a stage failed (an endpoint down, refusing or out of quota): one line, exit 1.

    The failed items stay in the stage's file, so a rerun asks them again."""

    exit_code = 1
