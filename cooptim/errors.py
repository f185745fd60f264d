"""The one base of cooptim's expected failures: bad input, a folder in the wrong state, a format
that cannot be represented. A CLI reports any of them as one `error:` line; anything else is a bug
and keeps its traceback (with --debug, everything does)."""


class UserError(Exception):
    """An expected failure, reported to a person as one line naming the problem and where it is."""
