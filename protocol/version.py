"""`--version` of both command lines: the installed package and the formats it speaks."""


def version_line(prog: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from protocol import bnn
    from protocol.session import PROTO

    try:
        installed = version("binsort")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "(not installed)"
    return "%s %s (.bnn format %d.%d, transfer protocol %d)" % (
        prog,
        installed,
        bnn.VERSION_MAJOR,
        bnn.VERSION_MINOR,
        PROTO,
    )
