"""`--version` and `--help` of both command lines: the installed package, the formats it
speaks, and every default."""


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


def show_defaults(parser) -> None:
    """Make every option's help end with its default where the text does not already give it,
    in `parser` and all its sub-commands."""
    import argparse

    class Help(argparse.HelpFormatter):
        def _get_help_string(self, action):
            text = action.help or ""
            default = action.default
            if (
                "default" in text
                or "(%s)" % (default,) in text
                or not action.option_strings
                or any(default is v for v in (None, False, True, argparse.SUPPRESS))
                or isinstance(action, argparse._VersionAction)
            ):
                return text
            return text + " (default: %(default)s)"

    todo = [parser]
    while todo:
        p = todo.pop()
        p.formatter_class = Help
        for action in p._actions:
            if action.help is None and action.option_strings:
                action.help = ""  # a default still has something to follow
                if not any(action.default is v for v in (None, False, True)):
                    action.help = "(default: %(default)s)"
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
