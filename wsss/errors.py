"""The one exception type for user errors.

Anything the user can fix (a missing folder, an unknown split, a malformed weights file, a NaN loss) raises
:class:`UserError`. The command line turns it into one clear line on stderr and exit code 2; library callers can
catch it like any other exception.
"""


class UserError(Exception):
    """A problem with the user's input. ``str(err)`` is the one line shown to the user."""
