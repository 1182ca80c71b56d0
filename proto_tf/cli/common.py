"""What every command shares: its own flags (so --help lists exactly them, with no
flags of imported libraries), one-line errors with exit status 2, and quiet logs."""

import sys
from typing import Callable

from absl import app, flags, logging

from proto_tf.errors import USAGE_EXIT_STATUS, exit_on_user_error

INTERRUPTED_EXIT_STATUS = 130  # 128 + SIGINT, as shells report it.
_HELP_ARGUMENTS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def usage(program: str, doc: str, flag_values: flags.FlagValues) -> str:
    """The command's description and every one of its flags with help and default."""
    return f"{doc.strip()}\n\nUsage: {program} [flags]\n\n{flag_values.get_help()}"


def run_command(
    main: Callable,
    doc: str,
    flag_values: flags.FlagValues,
    parse: Callable | None = None,
    allow_arguments: bool = False,
    interrupted: str = "nothing was left half-written; run the command again",
) -> None:
    """Runs `main(argv)` under absl with the command's own `flag_values`.

    `--help` prints `doc` and the command's flags; a flag error prints one line and
    exits with status 2; a UserError from `main` too (`exit_on_user_error`). `parse`
    replaces the plain `flag_values(argv)` (e.g. to load flagfiles first);
    `allow_arguments` passes arguments that are not flags on to `main`. Python-side
    INFO logs of TensorFlow (saving, tracing) are kept out of the output. Ctrl-C
    prints one line (`interrupted` says what to do) and exits with status 130.
    """

    def parser(argv):
        if any(argument in _HELP_ARGUMENTS for argument in argv[1:]):
            print(usage(argv[0], doc, flag_values))
            sys.exit(0)
        try:
            remaining = (parse or flag_values)(argv)
        except flags.Error as error:
            print(f"error: {error} (run with --help to list the flags)", file=sys.stderr)
            sys.exit(USAGE_EXIT_STATUS)
        flags.FLAGS.mark_as_parsed()  # absl's own flags (logging) keep their defaults.
        return remaining

    def quiet_main(argv):
        logging.set_verbosity(logging.WARNING)
        if len(argv) > 1 and not allow_arguments:
            print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
            sys.exit(USAGE_EXIT_STATUS)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print(f"\nerror: interrupted (Ctrl-C); {interrupted}.", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_STATUS)

    app.run(exit_on_user_error(quiet_main), flags_parser=parser)
