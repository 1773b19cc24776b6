"""Reading an experiment config: YAML files, backbone registry names, classes by path.

* Backbone registry names in configs and on the command line (``backbone: mamba``,
  ``--model.backbone mamba``) become class paths before jsonargparse sees them
  (:func:`rewrite_args`, :func:`rewrite_backbone_names`).
* :func:`import_class` turns a ``class_path`` into the class, with a :class:`ConfigError`
  naming the path when it cannot.
* :func:`resolve_config_path` finds a ``--config`` file: as given, else among the configs
  shipped in the package (``seqzoo/configs``), so ``--config forecasting/weather.yaml`` works
  from any directory once seqzoo is installed.

A low module: it imports only the backbone registry and the errors, so the CLI, ``compare``,
``export`` and the checkpoint readers can all use it without importing each other.
"""

from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path

import yaml

from seqzoo.backbones.base import get_backbone_class
from seqzoo.errors import ConfigError

PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The experiment configs shipped inside the package (``configs/`` in a clone links here)."""

BACKBONE_FLAGS = (
    "--model.backbone",
    "--model.init_args.backbone",
    "--model.backbone.class_path",
    "--model.init_args.backbone.class_path",
)


def class_path(cls: type) -> str:
    """``module.QualName`` of a class, as jsonargparse's ``class_path`` spells it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type:
    """The class at ``module.Name`` (ConfigError naming the path when it cannot be imported)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"cannot import class {path!r}") from None


def resolve_backbone_value(value: str) -> str:
    """A registry name becomes its class path; class paths, JSON and YAML pass through."""
    v = value.strip()
    if not v or "." in v or v[0] in "{[" or ":" in v:
        return value
    return class_path(get_backbone_class(v))


def backbone_holder(config: dict) -> dict | None:
    """The mapping that holds ``backbone`` in a config (``model.init_args`` or ``model``), or None."""
    model = config.get("model")
    if not isinstance(model, dict):
        return None
    init = model.get("init_args")
    if isinstance(init, dict) and "backbone" in init:
        return init
    return model if "backbone" in model else None


def rewrite_backbone_names(config: dict) -> bool:
    """Rewrite a registry name at ``model[.init_args].backbone`` in place; True if changed."""
    holder = backbone_holder(config)
    if holder is None:
        return False
    value = holder["backbone"]
    if isinstance(value, str):
        new = resolve_backbone_value(value)
        if new != value:
            holder["backbone"] = {"class_path": new}
            return True
    elif isinstance(value, dict) and isinstance(value.get("class_path"), str):
        new = resolve_backbone_value(value["class_path"])
        if new != value["class_path"]:
            value["class_path"] = new
            return True
    return False


def load_yaml(path: str | os.PathLike) -> dict:
    """A config file as a mapping (ConfigError naming the file when missing or not a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping (model:, data:, trainer: ...)")
    return data


def packaged_configs() -> list[str]:
    """Names of the shipped configs relative to :data:`PACKAGED_CONFIGS`, e.g. ``forecasting/weather.yaml``."""
    return sorted(p.relative_to(PACKAGED_CONFIGS).as_posix() for p in PACKAGED_CONFIGS.rglob("*.yaml"))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """The file a ``--config`` value names.

    The path as given when that file exists (relative paths from the working directory);
    otherwise the shipped config of that name, with or without a leading ``configs/``
    (``forecasting/weather.yaml``, ``configs/forecasting/weather.yaml``). A ConfigError names
    the path and the closest shipped configs when neither exists.
    """
    given = Path(path)
    if given.is_file():
        return given
    if not given.is_absolute():
        parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
        packaged = PACKAGED_CONFIGS.joinpath(*parts) if parts else None
        if packaged is not None and packaged.is_file():
            return packaged
    names = packaged_configs()
    wanted = given.as_posix().removeprefix("configs/")
    close = difflib.get_close_matches(wanted, names, n=4, cutoff=0.5)
    close += [n for n in names if Path(n).name == given.name and n not in close]
    hint = f"closest shipped configs: {', '.join(close)}" if close else f"{len(names)} shipped configs under {PACKAGED_CONFIGS}"
    raise ConfigError(f"config file not found: {path} (not a file from {Path.cwd()}, nor a config shipped with seqzoo; "
                      f"{hint})")


def rewrite_args(args: list[str]) -> tuple[list[str], str]:
    """Rewrite registry names in ``--config`` files and backbone flags.

    Returns the new argument list and the config name (stem of the last config file).
    A config that needs rewriting is passed on as YAML text.
    """
    out: list[str] = []
    config_name = "default"
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, inline = arg.partition("=")
        takes_value = key in ("--config", "-c") or key in BACKBONE_FLAGS
        if takes_value and not eq and i + 1 >= len(args):
            raise ConfigError(f"{key} needs a value")
        if takes_value:
            value = inline if eq else args[i + 1]
            i += 1 if eq else 2
            if key in ("--config", "-c"):
                value = str(resolve_config_path(value))
                config = load_yaml(value)
                config_name = Path(value).stem
                if rewrite_backbone_names(config):
                    value = yaml.safe_dump(config, sort_keys=False)
            else:
                value = resolve_backbone_value(value)
            out += [key, value]
            continue
        out.append(arg)
        i += 1
    return out, config_name


def backbone_name_of(class_path_: str) -> str:
    """Registry name of a backbone class path (the run folder's ``<backbone>`` part)."""
    cls = import_class(class_path_)
    return getattr(cls, "name", "") or cls.__name__.lower()


def task_class_of(config: dict) -> type:
    """The task class named at ``model.class_path``."""
    model = config.get("model") or {}
    if not isinstance(model, dict) or "class_path" not in model:
        raise ConfigError("config has no model.class_path")
    return import_class(model["class_path"])
