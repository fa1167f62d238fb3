"""The one exception type the CLI turns into a single line and a non-zero exit."""


class WeightsteerError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""
