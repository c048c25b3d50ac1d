"""Shared plumbing of the entry points: quiet TensorFlow, config flags, clean bad-input exits."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

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

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Prints one line to stderr and exits with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def parse_flags_or_exit(argv):
    """absl flag parser that reports a bad flag in one line with exit status 2 (absl uses 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(str(err).splitlines()[0])


def run(main) -> None:
    """`app.run(main)` where an `InputError` becomes one line on stderr and exit status 2."""

    def guarded(argv):
        # TensorFlow logs through absl at INFO (checkpoint sharding, ...): keep the console for
        # the progress bar and our summary unless the user asks with --verbosity.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except InputError as err:
            fail(str(err))

    app.run(guarded, flags_parser=parse_flags_or_exit)


def define_dataclass_flags(config_cls, help_prefix: str = "") -> None:
    """Defines one absl flag per field of a frozen dataclass, typed from its default."""
    for field in dataclasses.fields(config_cls):
        default = field.default
        helptext = f"{help_prefix}{field.name} (config field)."
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, helptext)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, helptext)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, helptext)
        else:
            flags.DEFINE_string(field.name, default, helptext)


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
