"""The ``wsss`` command: a lazy click group, so ``wsss --help`` imports neither torch nor the stages."""
from __future__ import annotations

import importlib
import sys

import click

from wsss import __version__
from wsss.errors import UserError

# Hand-written commands: name -> ("module:attribute", one-line help). Modules are imported only when they run.
COMMANDS = {
    "data": ("wsss.cli.data:data", "Write toy data in the real VOC/SBD layout, or prepare real data."),
    "eval": ("wsss.cli.eval:eval_cmd", "mIoU of label PNGs, or a background-threshold sweep over CAMs."),
    "pipeline": ("wsss.cli.pipeline:pipeline", "Run a YAML recipe that chains stages."),
    "compare": ("wsss.cli.compare:compare", "One table of every evaluated artifact in some runs."),
    "demo": ("wsss.cli.demo:demo", "Toy data + the pipelines on CPU; prints the comparison table."),
    "models": ("wsss.cli.models:models", "List the registered networks."),
    "viz": ("wsss.cli.viz:viz", "Overlays of CAMs or labels on their images, as an HTML page."),
}
# Command groups of DESIGN.md not built yet: they answer with one clear line.
PLANNED: dict[str, str] = {}


def lazy_commands() -> dict:
    """Every top-level command: the stage groups of the table (:mod:`wsss.stages.table`), then the others."""
    from wsss.stages.table import GROUPS

    planned = {name: (None, text) for name, text in PLANNED.items() if name not in GROUPS}
    return {**{name: ("stage group", text) for name, text in GROUPS.items()}, **COMMANDS, **planned}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str):
        if name in self.lazy:
            target, _ = self.lazy[name]
            if target is None:
                return _unavailable(name)
            if target == "stage group":
                from wsss.cli.stage_commands import stage_group

                return stage_group(name)
            module, attr = target.split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as e:
                if e.name == module:
                    return _unavailable(name)
                raise
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx) if name in self.lazy]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise ExitWithMessage(user_message(e)) from None


def user_message(err: UserError) -> str:
    """The one line of a UserError, also when a DataLoader worker re-raised it with its traceback attached."""
    text = str(err)
    if "Original Traceback" in text:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1]
        text = last.split("UserError: ", 1)[1] if "UserError: " in last else last
    return text.strip().splitlines()[0] if text.strip() else "error"


def _unavailable(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args):
        raise UserError(f"'wsss {name}' is not available in this version ({__version__})")

    return cmd


class ExitWithMessage(click.ClickException):
    """A :class:`UserError` on its way out: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"wsss: error: {self.message}", err=True)


@click.group(cls=LazyGroup, lazy=lazy_commands(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsss")
def cli() -> None:
    """wsss: weakly-supervised semantic segmentation from image-level labels.

    PSA/AffinityNet, SEAM, single-stage and WS-FCN behind one command line, one dataset layer and one evaluator.
    """


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="wsss")


if __name__ == "__main__":
    main(sys.argv[1:])
