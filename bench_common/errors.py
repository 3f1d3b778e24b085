"""The one error type for bad input: its message is a single line the CLI prints as is."""


class BenchError(Exception):
    """A user-facing error (bad flag, config, data file, plugin), reported in one line with exit 2.

    Raise it with a message that names the file/field/flag and says what was expected; the CLI
    prints `error: <message>` and no traceback (unless --debug).
    """

    def __init__(self, message: str):
        # One line: a message with newlines would break the CLI's one-line contract.
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an error's message (at most `limit` characters), or its type's
    name when the message is empty: what a one-line row or message can show of it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def describe_error(err: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, or the type alone when the message is empty."""
    name = type(err).__name__
    return f"{name}: {first_line(err, limit)}" if str(err).strip() else name
