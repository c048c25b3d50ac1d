"""Shared plumbing of the entry points: quiet TensorFlow, config flags, clean bad-input exits."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with native stderr captured.

    TensorFlow 2.21 writes start-up lines (oneDNN, CUDA probing) through absl's C++ logging
    before `TF_CPP_MIN_LOG_LEVEL` applies, so a user who mistyped a flag would see them above
    the one-line error. They are captured here and replayed only if the import fails; set
    SIAMESE_TF_NATIVE_LOGS=1 to see them.
    """
    if os.environ.get("SIAMESE_TF_NATIVE_LOGS"):
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            # Physical devices only (this is where CUDA is probed and complains): logical
            # devices would initialise the runtime before MultiWorkerMirroredStrategy can
            # configure its collective ops.
            tf.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_tensorflow_quietly()

from absl import app, flags, logging  # noqa: E402

from siamese_tf.errors import InputError  # noqa: E402

# Exit statuses besides 0 and 1 (a NaN loss or an unexpected error), in README.
EXIT_BAD_INPUT = 2
# 128 + SIGINT, as a shell reports Ctrl-C (training saves a backup first; re-run to resume).
EXIT_INTERRUPTED = 130
# EX_TEMPFAIL: training stopped on SIGTERM (or, multi-worker, a peer's stop) after saving; re-run.
EXIT_PREEMPTED = 75
# EX_UNAVAILABLE: a worker of a multi-worker job was lost; nothing was saved after the last
# backup; re-run to resume from it.
EXIT_LOST_WORKER = 69


def fail(message: str, teardown: bool = True) -> None:
    """Prints one line to stderr and exits with status 2 (bad input).

    Args:
      message: what is wrong and what to do.
      teardown: False skips the interpreter's teardown (`os._exit`, after flushing).
    """
    print(f"error: {message}", file=sys.stderr, flush=True)
    if not teardown:
        sys.stdout.flush()
        os._exit(EXIT_BAD_INPUT)
    sys.exit(EXIT_BAD_INPUT)


HELP_ARGS = ("-h", "--h", "-help", "--help", "--helpshort", "-?")
# Flags defined by `define_dataclass_flags`, in order: `--help` lists them after the entry
# point's own flags.
_CONFIG_FLAGS: list = []


def parse_flags_or_exit(argv):
    """absl flag parser that reports a bad flag in one line with exit status 2 (absl uses 1).

    `--help` (`-h`, `--helpshort`) prints the entry point's own help and exits 0; absl's
    `--helpfull` still lists every flag, absl's own included.
    """
    options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(arg in HELP_ARGS for arg in options):
        print(help_text())
        sys.exit(0)
    if "--helpfull" in options:  # absl prints the same but exits with status 1.
        print(flags.FLAGS.get_help())
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(_flag_error_message(err, argv))


def _flag_error_message(err: flags.Error, argv) -> str:
    """absl's parse error as one line that names the problem and the fix."""
    message = str(err).splitlines()[0]
    flagfile = _FLAGFILE_ERROR.search(message)
    if flagfile:
        reason, name = flagfile.group(2), flagfile.group(3)
        if flagfile.group(1) == "2":
            reason = f"not found (relative paths start at {os.getcwd()})"
        return f"cannot read --flagfile={name}: {reason}"
    enum = _ENUM_ERROR.search(message)
    if enum:  # The wording of `TrainConfig`'s own check.
        return f"--{enum.group(1)} is not one of: {', '.join(enum.group(2).split('|'))}"
    unknown = _UNKNOWN_FLAG.search(message)
    if unknown:
        hint = _UNKNOWN_FLAG_HINT or f"`python -m {_entry_point(argv)} --help` lists the flags"
        return f"unknown flag --{unknown.group(1)}; {hint}"
    return message.removeprefix("ERROR:: ").removeprefix("ERROR: ")


_FLAGFILE_ERROR = re.compile(r"Unable to open flagfile: \[Errno (\d+)\] ([^:]+): '(.*)'")
_UNKNOWN_FLAG = re.compile(r"Unknown command line flag '([^']+)'")
_ENUM_ERROR = re.compile(r"flag --(\w+=.*): value should be one of <(.*)>")
# What to say after "unknown flag --NAME" (an entry point may set it; see `run`).
_UNKNOWN_FLAG_HINT = ""


def _entry_point(argv) -> str:
    """`launch.NAME` of the running entry point (for messages)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.splitext(os.path.basename(argv[0]))[0] if argv else "launch"


def help_text(width: int = 100) -> str:
    """The entry point's help: its docstring, then each of its flags and the config's flags.

    Each flag shows its type, default and description (the config's come from the
    `Attributes:` section of its docstring, see `define_dataclass_flags`).
    """
    main = sys.modules.get("__main__")
    parts = [textwrap.dedent(getattr(main, "__doc__", None) or "").strip()]
    by_module = flags.FLAGS.flags_by_module_dict()
    skip = {*_CONFIG_FLAGS, "helpfull", "helpxml"}
    own = [flag for flag in by_module.get(sys.argv[0], []) if flag.name not in skip]
    if own:
        parts.append("Flags:\n" + "\n".join(_flag_help(f, width) for f in own))
    if _CONFIG_FLAGS:
        config = [flags.FLAGS[name] for name in _CONFIG_FLAGS]
        parts.append(
            "Training flags (each a field of config.json):\n"
            + "\n".join(_flag_help(f, width) for f in config)
        )
    parts.append(
        textwrap.fill(
            "--flagfile=FILE reads flags from a file (launch/configs/*.flags); "
            "--helpfull also lists absl's own flags.",
            width=width,
        )
    )
    return "\n\n".join(p for p in parts if p)


def _flag_help(flag, width: int) -> str:
    kind = {bool: "bool", int: "integer", float: "float"}.get(type(flag.default), "string")
    if flag.flag_type() == "multi_string":
        kind = "repeatable string"
    elif flag.flag_type() == "list":
        kind = "comma-separated list"
    elif isinstance(flag.parser, flags.EnumParser):
        kind = "one of " + ", ".join(flag.parser.enum_values)
    if isinstance(flag.default, bool):
        name = f"--[no]{flag.name}"
        default = "true" if flag.default else "false"
    else:
        name = f"--{flag.name}"
        if flag.default is None:
            default = "none"
        elif isinstance(flag.default, list):
            default = ",".join(str(v) for v in flag.default)
        else:
            default = str(flag.default) if flag.default != "" else "''"
    head = f"  {name} ({kind}; default: {default})"
    helptext = re.sub(r"^<[^>]*>: ", "", flag.help or "")  # absl's enum prefix: in `kind`.
    body = textwrap.fill(helptext, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return f"{head}\n{body}" if flag.help else head


def _may_leave_reads_in_flight(err: InputError) -> bool:
    """Whether `err` is a prepared store's error: met in an input pipeline, other reads of that
    pipeline may still be running."""
    if "siamese_tf.data.store.layout" not in sys.modules:
        return False
    from siamese_tf.data.store.layout import StoreError

    return isinstance(err, StoreError)


def run(main, unknown_flag_hint: str = "") -> None:
    """`app.run(main)` where an `InputError` becomes one line on stderr and exit status 2.

    Args:
      main: the entry point's `main(argv)`.
      unknown_flag_hint: what the error line says after "unknown flag --NAME"; by default,
        that `--help` lists the flags.
    """
    global _UNKNOWN_FLAG_HINT
    _UNKNOWN_FLAG_HINT = unknown_flag_hint

    def guarded(argv):
        # TensorFlow logs through absl at INFO (checkpoint sharding, ...): keep the console for
        # the progress bar and our summary unless the user asks with --verbosity.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except InputError as err:
            # A store's reader threads may still be in flight; at interpreter exit they cannot
            # take the GIL and TensorFlow's iterator destructor waits on them forever (a hang
            # after the error line, seen in CI). Nothing is left to save: skip the teardown, as
            # a lost worker does.
            fail(str(err), teardown=not _may_leave_reads_in_flight(err))
        except KeyboardInterrupt:
            # Ctrl-C outside training (which saves and exits 130 itself): nothing to save.
            print("stopped: interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)

    app.run(guarded, flags_parser=parse_flags_or_exit)


def define_dataclass_flags(config_cls, choices=None) -> None:
    """Defines one absl flag per field of a frozen dataclass, typed from its default.

    Each flag's help is the field's entry in the `Attributes:` section of the dataclass's
    docstring (`trainers.field_docs`): the one place a setting is described. A field named in
    `choices` ({name: allowed values}) becomes an enum flag.
    """
    from trainers.field_docs import attribute_docs

    docs = attribute_docs(config_cls)
    for field in dataclasses.fields(config_cls):
        default = field.default
        helptext = docs.get(field.name) or f"{field.name} (undocumented config field)."
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, helptext)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, helptext)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, helptext)
        elif field.name in (choices or {}):
            flags.DEFINE_enum(field.name, default, choices[field.name], helptext)
        else:
            flags.DEFINE_string(field.name, default, helptext)
        _CONFIG_FLAGS.append(field.name)


def dataclass_from_flags(config_cls):
    """Builds the dataclass from the parsed flags of the same names (validates in __post_init__)."""
    values = {f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(config_cls)}
    return config_cls(**values)


def check_workdir_writable(workdir: str) -> None:
    """Fails early when `workdir` cannot be created or written, before anything is written."""
    if not workdir:
        raise InputError("--workdir is required, e.g. --workdir=runs/digits")
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--workdir={workdir} exists and is not a directory")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    # Try a real write: `os.access` says yes to root even on read-only or virtual file systems.
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise InputError(f"--workdir={workdir} is not writable ({probe}: {err.strerror})") from None
