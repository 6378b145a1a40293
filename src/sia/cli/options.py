"""Command-line options generated from a config's fields, so `sia run --help` is the config's own documentation.

Each leaf of `RunConfig` (nested configs flattened) becomes one option:
`max_generations` -> `--max-generations`, typed from the field's annotation
(or its `cli_type`), with the field's docstring as help and its default (or
`cli_default`) shown. A list field is a repeatable option, a bool a
`--x/--no-x` flag, and a field marked `"cli": "argument"` a positional
argument. The command receives the values as a flat dict, which
`sia.loop.config.from_flat` checks in one place.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional, Union

import typer
from pydantic import BaseModel

from sia.loop.config import leaf_fields, option_name


def _cli_type(annotation: Any) -> Any:
    """The click-friendly type of a field annotation: Optional[X] -> X, tuple/list -> list[str]."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(args[0]) if len(args) == 1 else str
    if origin in (list, tuple):
        return list[str]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def config_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    params = []
    for path, f in leaf_fields(model):
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        name = option_name(path, f)
        typ = extra.get("cli_type") or _cli_type(f.annotation)
        default = extra["cli_default"] if "cli_default" in extra else f.get_default(call_default_factory=True)
        if isinstance(default, (tuple, list)) and not default:
            default = None
        if typing.get_origin(typ) is list or default is None:
            typ = Optional[typ]  # noqa: UP045 (built at run time from any annotation typer reads)
        help_text = (f.description or "").strip()
        info = typer.Argument(help=help_text) if extra.get("cli") == "argument" else typer.Option(help=help_text)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[typ, info]))
    return params


def command(model: type[BaseModel], extra: list[inspect.Parameter], handler: Callable[[dict[str, Any], dict[str, Any]], None],
            doc: str) -> Callable[..., None]:
    """A typer command whose options are `model`'s leaves plus `extra`; `handler(settings, extras)` gets the values."""
    generated = config_parameters(model)
    names = {p.name for p in generated}

    def cmd(**kwargs: Any) -> None:
        settings = {k: v for k, v in kwargs.items() if k in names and v is not None}
        handler(settings, {k: v for k, v in kwargs.items() if k not in names})

    cmd.__signature__ = inspect.Signature(generated + extra)  # type: ignore[attr-defined]
    cmd.__doc__ = doc
    return cmd


def extra_option(name: str, typ: Any, default: Any, help_text: str, *decls: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[typ, typer.Option(*decls, help=help_text)])
