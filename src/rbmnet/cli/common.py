"""Shared pieces of the command-line entry points: one-line errors, common options."""
from __future__ import annotations

import functools
import os
import sys

import click

from rbmnet.errors import RbmnetError
from rbmnet.layout import DEFAULT_PLANS_NAME
from rbmnet.planning.plan import parse_override

EXIT_BAD_INPUT = 2


def friendly_errors(func):
    """Turn RbmnetError into 'error: <one line>' and a non-zero exit; RBMNET_DEBUG=1 keeps tracebacks."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RbmnetError as exc:
            if os.environ.get("RBMNET_DEBUG"):
                raise
            exit_code = getattr(exc, "exit_code", None)  # a stop the user asked for is no error
            click.echo(str(exc) if exit_code else f"error: {exc}", err=True)
            sys.exit(exit_code or EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


dataset_option = click.option(
    "-d", "--dataset", "dataset", default=None,
    help="Dataset name in the raw root; may be omitted when only one dataset exists.")

plans_option = click.option(
    "-p", "--plans", "plans_name", default=DEFAULT_PLANS_NAME, show_default=True,
    help="Name of the plan (plans.json is 'plans'); lets several plans of one dataset coexist.")

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override any plan key for this run, e.g. --set segmentation.epochs=5 "
         "--set input_size=[256,256]. Values are JSON.")


def overrides_to_dict(overrides: tuple[str, ...]) -> dict[str, object]:
    return dict(parse_override(text) for text in overrides)


def model_options(verb: str):
    """-d / -m / -f: which trained model and folds a command uses (rbmnet_predict, rbmnet_export)."""
    def decorate(func):
        for option in reversed((
            click.option("-d", "--dataset", "dataset", default=None,
                         help=f"Dataset whose model is {verb} (a folder of rbmnet_results); may be omitted when only "
                              f"one has models or when --model is a folder."),
            click.option("-m", "--model", default=None,
                         help="Model folder path, or its id under rbmnet_results/<NAME>/ "
                              "(default: the newest trained segmentation model of the dataset)."),
            click.option("-f", "--folds", "folds", multiple=True, metavar="FOLD",
                         help="Fold(s), e.g. -f 0 -f 1 or -f 0,1 (default: every trained fold)."),
        )):
            func = option(func)
        return func
    return decorate


def fold_list(folds: tuple[str, ...]) -> list[str] | None:
    """-f 0 -f 1,2 -> ['0', '1', '2']; None when no fold was named."""
    return [f.strip() for text in folds for f in text.split(",") if f.strip()] or None
