"""The `adapt` command line: a thin layer over the adaptsr library.

Subcommands are imported only when they run, so `adapt export trt` or `adapt upscale --engine`
work on a deployment machine that has TensorRT and numpy but no torch.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings

import click

from adaptsr.core.errors import UserError
from adaptsr.core.version import __version__

# command name -> "module:attribute" (a click.Command); order is the --help order.
COMMANDS = {
    "train": "adaptsr.cli.commands.train:train",
    "allocate": "adaptsr.cli.commands.allocate:allocate",
    "merge": "adaptsr.cli.commands.merge:merge",
    "eval": "adaptsr.cli.commands.eval:eval_command",
    "export": "adaptsr.cli.commands.export:export",
    "upscale": "adaptsr.cli.commands.upscale:upscale",
    "bench": "adaptsr.cli.commands.bench:bench",
    "study": "adaptsr.cli.commands.study:study",
    "degrade": "adaptsr.cli.commands.degrade:degrade",
    "calibrate": "adaptsr.cli.commands.calibrate:calibrate",
    "models": "adaptsr.cli.commands.models:models",
    "fetch": "adaptsr.cli.commands.fetch:fetch",
    "demo": "adaptsr.cli.commands.demo:demo",
}

_debug = os.environ.get("ADAPTSR_DEBUG", "") not in ("", "0")


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return list(self.lazy) + sorted(super().list_commands(ctx))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="adaptsr")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Adapt super-resolution models to real photos with rank-aware LoRA, merge the adapters,
    and ship the result to ONNX and TensorRT with zero inference overhead."""
    global _debug
    _debug = _debug or debug


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (partial files) runs."""


def _terminate(signum, frame):
    raise Terminated


class _Stderr:
    """sys.stderr that remembers whether its last write ended a line: progress bars end with
    a carriage return, and on a file or pipe the error would continue that line."""

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text):
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def error_line(message: object) -> str:
    """The one `error:` line for a message. Messages repeat user text (file names, rank-map
    keys), which may hold a newline or a terminal escape: every character that is not printable
    is written as its escape (a newline as \\n), so the line stays one line and says exactly
    which name was meant."""
    text = str(message).strip()
    return "error: " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fail(message: str, code: int = 1) -> None:
    if not getattr(sys.stderr, "at_line_start", True):
        sys.stderr.write("\n")
    click.echo(error_line(message), err=True)
    sys.exit(code)


def _interrupted(e: BaseException) -> None:
    terminated = isinstance(e, Terminated) or isinstance(e.__cause__, Terminated)
    _fail("terminated (SIGTERM)" if terminated else "interrupted", code=143 if terminated else 130)


# click >= 8.2 raises this for a group called without its command; older versions print help
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    stderr = sys.stderr
    sys.stderr = _Stderr(stderr)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        _main(argv)
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stderr = stderr


def _main(argv: list[str] | None) -> None:
    global _debug
    argv = sys.argv[1:] if argv is None else argv
    _debug = _debug or "--debug" in argv
    if not _debug:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        cli.main(args=argv, prog_name="adapt", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        if _debug:
            raise
        if isinstance(e, _NO_ARGS) and e.ctx:  # a bare `adapt` or `adapt export`: its help
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(2)
        where = e.ctx.command_path if e.ctx else "adapt"
        _fail(f"{e.format_message()} (see `{where} --help`)", code=2)
    except click.ClickException as e:
        if _debug:
            raise
        _fail(e.format_message(), code=e.exit_code)
    except (click.Abort, KeyboardInterrupt) as e:
        if _debug:
            raise
        _interrupted(e)
    except UserError as e:
        if _debug:
            raise
        _fail(str(e))
    except OSError as e:
        if _debug:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        _fail(f"{e.strerror or e}{where}")
    except MemoryError:  # the machine's limit, not a bug: sizes too large for this memory
        if _debug:
            raise
        _fail("out of memory (use smaller sizes: --tile, --batch, --patch)")
    except Exception as e:  # anything else is a bug: still one line unless --debug
        if _debug:
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"internal error: {type(e).__name__}: {text} (rerun with --debug for details)")


if __name__ == "__main__":
    main()
