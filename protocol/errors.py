"""Errors a user or the network can cause. CLIs print them on one line and exit with status 2."""


class BinsortError(Exception):
    """Something outside the program is wrong: a file, a folder, an option, a peer."""


class FormatError(BinsortError):
    """A model file or stream is not what it claims to be (bad magic, CRC, hash, layout)."""


def run_cli(prog: str, command, args) -> int:
    """Run a CLI command: a BinsortError becomes one line on stderr and exit status 2."""
    import sys

    try:
        return command(args)
    except BinsortError as e:
        print("%s: error: %s" % (prog, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `binsort ... | head`: the reader has gone, and that is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def bounded(error, limit: int = 300) -> str:
    """One line about an exception, at most `limit` characters (it may quote a peer)."""
    text = ("%s" % error) or type(error).__name__
    if not isinstance(error, BinsortError):
        text = "%s: %s" % (type(error).__name__, text)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
