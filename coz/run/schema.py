"""Typed configs: every tool's config and every option of a config group has a schema.

A schema is a dataclass of the keys a config may hold, with their types; the YAML keeps the values
and their comments (every field is ``MISSING`` in the schema, so a value is never stated twice). A
config group's field names the schemas of its options (:func:`group`), chosen by the option's own
``name`` (or ``mode``), the key the code dispatches on too. :func:`typed` merges the composed config
into its tool's schema, so a value of the wrong type or an unknown key (``+key=value`` included) is
refused; what a type cannot say (ranges, a list of choices, ``auto`` or a number) is a :class:`Rule`
in the field's metadata, and :func:`check` applies every rule in one walk. Every refusal is one line
naming the key, the value and what is allowed (:class:`ConfigError`, exit 2), before a model loads or
a file is written.

A config key that Python cannot name (``from=``, a keyword) is the field ``from_`` declared with
:func:`alias` (a tool's schema or a group option's): the typed config holds it under its config name.

The schemas are applied after Hydra composes rather than registered in Hydra's ConfigStore: a stored
schema group shows up in every tool's ``--help`` and shell completion. A user's own component (a
config with ``_target_``) has no schema and passes through unchecked.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from coz.errors import CozError

SCHEMA_GROUP = "coz_schema"


class ConfigError(CozError):
    """A config value that cannot work: one line, exit 2."""


# ---------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """What a field allows beyond its type: ``allowed`` says it in words, ``ok`` decides."""

    allowed: str
    ok: Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()


def _bounds_text(minimum: float | None, maximum: float | None, above: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if above is not None:
        return f" > {above}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def _within(value: float, minimum: float | None, maximum: float | None, above: float | None) -> bool:
    return (
        (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
        and (above is None or value > above)
    )


def _field(rule: Rule) -> Any:
    return field(default=MISSING, metadata={"rule": rule})


def alias(name: str, spec: Any = MISSING) -> Any:
    """``spec`` (a field of the rules below, or ``MISSING``) read from config key ``name``: for a key
    that is a Python keyword (``from_: list[str] = alias("from", words())``)."""
    if not isinstance(spec, Field):
        spec = field(default=spec)
    return field(default=spec.default, metadata={**spec.metadata, "key": name})


def config_key(spec: Any) -> str:
    """The config key of a schema field: its name, or the name :func:`alias` gave it."""
    return spec.metadata.get("key", spec.name)


def whole(minimum: int | None = None, maximum: int | None = None, *, null: bool = False, auto: bool = False):
    """A whole number in bounds; ``null``/``auto`` also allow null / the word ``auto``."""
    allowed = "a whole number" + _bounds_text(minimum, maximum, None)
    allowed += " or auto" if auto else ""
    allowed += " (or null)" if null else ""

    def ok(value: Any) -> bool:
        if value is None:
            return null
        if auto and value == "auto":
            return True
        return _is_whole(value) and _within(value, minimum, maximum, None)

    return _field(Rule(allowed, ok))


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    null: bool = False,
):
    """A finite number in bounds (``above``: strictly greater)."""
    allowed = "a number" + _bounds_text(minimum, maximum, above) + (" (or null)" if null else "")

    def ok(value: Any) -> bool:
        if value is None:
            return null
        return (
            _is_number(value)
            and value == value
            and abs(value) != float("inf")
            and _within(value, minimum, maximum, above)
        )

    return _field(Rule(allowed, ok))


def one_of(*options: str, null: bool = False):
    """One of a few words."""
    allowed = "one of " + ", ".join(options) + (" (or null)" if null else "")
    return _field(Rule(allowed, lambda v: (v is None and null) or (isinstance(v, str) and v in options)))


def numbers(
    count: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    null: bool = False,
):
    """A list of numbers (``count`` of them when given) in bounds."""
    what = f"a list of {count} numbers" if count else "a list of numbers"
    allowed = what + _bounds_text(minimum, maximum, None) + (" (or null)" if null else "")

    def ok(value: Any) -> bool:
        if value is None:
            return null
        items = list(value) if isinstance(value, ListConfig | list) else None
        return (
            items is not None
            and (count is None or len(items) == count)
            and all(_is_number(x) and _within(x, minimum, maximum, None) for x in items)
        )

    return _field(Rule(allowed, ok))


def words(*, null: bool = False):
    """A list of words (text items)."""
    allowed = "a list of words" + (" (or null)" if null else "")

    def ok(value: Any) -> bool:
        if value is None:
            return null
        return isinstance(value, ListConfig | list) and all(isinstance(x, str) for x in value)

    return _field(Rule(allowed, ok))


def rule(allowed: str, ok: Callable[[Any], bool]):
    """Any other rule, said in words."""
    return _field(Rule(allowed, ok))


# ---------------------------------------------------------------------------------- the walk
def check(cfg: DictConfig) -> None:
    """Every rule of every typed node of ``cfg``, and no key a schema does not declare."""
    for path, node, schema in _typed_nodes(cfg, ""):
        declared = {config_key(f): f for f in fields(schema)}
        for key in node.keys():
            if key not in declared:
                raise ConfigError(unknown_key_message(f"{path}{key}", list(declared), path))
        for name, spec in declared.items():
            found = spec.metadata.get("rule")
            if found is None or name not in node or OmegaConf.is_missing(node, name):
                continue
            value = node[name]
            plain = (
                OmegaConf.to_container(value, resolve=True)
                if isinstance(value, DictConfig | ListConfig)
                else value
            )
            if not found.ok(plain):
                raise ConfigError(f"{path}{name}={_show(plain)}: must be {found.allowed}")


def _typed_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig, type]]:
    if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
        schema = OmegaConf.get_type(node)
        if is_dataclass(schema):
            yield path, node, schema
        for key in node.keys():
            if key == "hydra" or OmegaConf.is_missing(node, key):
                continue
            yield from _typed_nodes(node._get_node(key), f"{path}{key}.")
    elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
        for i, item in enumerate(node._iter_ex(resolve=False)):
            yield from _typed_nodes(item, f"{path}{i}.")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return str(value).replace("'", "")


def unknown_key_message(key: str, siblings: list[str], path: str) -> str:
    leaf = key[len(path) :]
    near = difflib.get_close_matches(leaf.split(".")[0], siblings, n=1, cutoff=0.6)
    hint = (
        f"; did you mean {path}{near[0]}?"
        if near
        else f"; {path.rstrip('.') or 'the top level'} has: {', '.join(siblings)}"
    )
    return f"{key}: no such key{hint}"


# ------------------------------------------------------------- Hydra's refusals, in one line
_TYPE_WORDS = (
    (re.compile(r"to Integer"), "a whole number"),
    (re.compile(r"to Float"), "a number"),
    (re.compile(r"not a valid bool"), "true or false"),
    (re.compile(r"to string", re.I), "text"),
    (re.compile(r"Cannot assign \w+ to Dict"), "a section of keys (give KEY.NAME=VALUE), not a single value"),
    (
        re.compile(r"Invalid type assigned: \w+ is not a subclass of (\w+)"),
        "a {0} section, not a single value",
    ),
    (re.compile(r"object of type 'str'.*List|to ListConfig|not a list|ListConfig"), "a list, e.g. [1,2]"),
)


def describe(err: BaseException, cfg: DictConfig | None = None) -> str | None:
    """One line for OmegaConf's refusal of a typed value or key (``cfg``: the config refused, for
    the value), None if it is not one."""
    cause = err
    while cause.__cause__ is not None and isinstance(cause.__cause__, Exception):
        cause = cause.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = getattr(cause, "full_key", None) or ""
    schema = getattr(cause, "object_type", None)
    if (
        isinstance(cause, ConfigKeyError | ConfigAttributeError)
        and "not in" in str(cause)
        and is_dataclass(schema)
    ):
        path = key.rpartition(".")[0]
        return unknown_key_message(key, [config_key(f) for f in fields(schema)], f"{path}." if path else "")
    if isinstance(cause, ValidationError) and key:
        message = str(cause).splitlines()[0]
        value = _value_of(err, key, cfg)
        if found := _rule_of(schema, key.rpartition(".")[2]):  # what the field allows, range included
            return f"{key}={value}: must be {found.allowed}"
        for pattern, words_ in _TYPE_WORDS:
            if found := pattern.search(message):
                return f"{key}={value}: must be {words_.format(*found.groups())}"
        return f"{key}={value}: {message}"
    return None


def _rule_of(schema: Any, name: str) -> Rule | None:
    """The rule of field ``name`` (a config key) of ``schema``, None if it has none."""
    if not is_dataclass(schema):
        return None
    return next((f.metadata.get("rule") for f in fields(schema) if config_key(f) == name), None)


def options_with(schema: type, key: str) -> list[str]:
    """The group options that declare the dotted ``key`` (``prompt.adapter`` -> ``prompt=vlm``, ...;
    ``zoom.vae_tiling`` -> ``zoom.mode=full``); [] if no group on the way chooses it."""
    head, _, rest = key.partition(".")
    spec = next((f for f in fields(schema) if config_key(f) == head), None) if is_dataclass(schema) else None
    if spec is None or not rest:
        return []
    options = spec.metadata.get("options")
    if options is None:
        inner = typing.get_type_hints(schema).get(spec.name)
        return options_with(inner, rest) if isinstance(inner, type) and is_dataclass(inner) else []
    owners = []
    for name, option in options.schemas.items():
        if f"{head}.{rest}" in keys_of(option, f"{head}."):
            owners.append(f"{head}={name}" if options.by == "name" else f"{head}.{options.by}={name}")
    return owners


def keys_of(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key ``schema`` declares (a group's: the keys of all its options)."""
    found = []
    hints = typing.get_type_hints(schema)  # the field types, not their strings
    for spec in fields(schema):
        options = spec.metadata.get("options")
        declared = hints.get(spec.name)
        inner = [declared] if isinstance(declared, type) and is_dataclass(declared) else []
        inner += list(options.schemas.values()) if options else []
        if not inner:
            found.append(prefix + config_key(spec))
        for option in dict.fromkeys(inner):
            found += keys_of(option, f"{prefix}{config_key(spec)}.")
    return sorted(set(found))


def unknown_override(err: BaseException, schema: type | None) -> str | None:
    """Hydra's 'Could not override KEY' (a key no config has) as one line with the nearest real key,
    instead of Hydra's advice to add it with ``+``."""
    found = re.search(r"Could not override '([^']+)'", str(err))
    if found is None:
        return None
    key = found.group(1)
    keys = keys_of(schema) if schema else []
    if key in keys and (owners := options_with(schema, key)):  # a key of the group's other options
        have = "has" if len(owners) == 1 else "have"
        return f"{key}: not a key of this {key.split('.')[0]}; only {', '.join(owners)} {have} it"
    section = key.rpartition(".")[0]
    if section == "trainer" and section in keys:  # lightning.Trainer's: any argument, given with a +
        from coz.run.trainer import INTERPRETED

        near = difflib.get_close_matches(key.split(".")[1], INTERPRETED, n=1, cutoff=0.6)
        if near:
            return f"{key}: no such key; did you mean trainer.{near[0]}?"
        return f"{key}: no such key (+trainer.KEY=VALUE passes any other lightning.Trainer argument)"
    inside = sorted(
        {k[len(section) + 1 :].split(".")[0] for k in keys if section and k.startswith(f"{section}.")}
    )
    if inside:  # a real section: the nearest key there, else what it has (not a look-alike elsewhere)
        return unknown_key_message(key, inside, f"{section}.")
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not near:  # a leaf typed without its section (stepz for zoom.steps)
        leaves = difflib.get_close_matches(
            key.rsplit(".", 1)[-1], {k.rsplit(".", 1)[-1] for k in keys}, 1, 0.8
        )
        near = [k for k in keys if leaves and k.rsplit(".", 1)[-1] == leaves[0]][:1]
    return f"{key}: no such key" + (f"; did you mean {near[0]}?" if near else "")


def unknown_option(err: BaseException) -> str | None:
    """Hydra's 'Could not find GROUP/NAME' (an option no config group has: ``backbone=spam``) as one
    line with the nearest option and the group's options, instead of Hydra's listing of its search path."""
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if not options or not missing or "/" not in missing:
        return None
    group, name = missing.rsplit("/", 1)
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else ""
    return f"{group}={name}: no such option{hint} ({group}: {', '.join(sorted(options))})"


def _value_of(err: BaseException, key: str, cfg: DictConfig | None) -> str:
    """The value refused at ``key``: in ``cfg``, or as OmegaConf's message quotes it."""
    if cfg is not None:
        try:
            found = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        except OmegaConfBaseException:
            found = None
        if found is not None:
            plain = OmegaConf.to_container(found) if isinstance(found, DictConfig | ListConfig) else found
            return _show(plain)
    quoted = re.search(r"Value '(.*?)'", str(err)) or re.search(r": '(.*)'$", str(err).splitlines()[0])
    return quoted.group(1) if quoted else "?"


# ------------------------------------------------------------------- a group's option schemas
@dataclass(frozen=True)
class Options:
    """A config group's schemas, one per option, chosen by the option's ``by`` key."""

    by: str
    schemas: dict[str, type]


def group(schemas: dict[str, type], by: str = "name") -> Any:
    """The field of a config group (``backbone``, ``prompt``...): its options' schemas by ``by``."""
    return field(default=MISSING, metadata={"options": Options(by, schemas)})


def typed(schema: type, cfg: DictConfig) -> DictConfig:
    """``cfg`` merged into ``schema`` (and each group's node into its option's schema), checked:
    the typed config every tool runs on, or a :class:`ConfigError`."""
    skeleton = _structured(schema)
    for spec in fields(schema):
        options = spec.metadata.get("options")
        node = cfg.get(spec.name) if options else None
        if isinstance(node, DictConfig) and "_target_" not in node:  # a user's own: no schema
            choice = node.get(options.by)
            if choice not in options.schemas:
                raise ConfigError(
                    f"{spec.name}.{options.by}={choice}: no such {spec.name} (use one of "
                    f"{', '.join(sorted(options.schemas))}, or a config with _target_)"
                )
            skeleton[spec.name] = _structured(options.schemas[choice])
    try:
        merged = OmegaConf.merge(skeleton, cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(describe(err, cfg) or one_line(str(err))) from None
    check(merged)
    return merged


def _structured(schema: type) -> DictConfig:
    """``OmegaConf.structured(schema)`` with each field of a :func:`alias` under its config key (its
    typed node moved there: the type still applies). A tool's schema and a group option's may
    have such fields. A copy of the one built per schema: building it costs a third of ``typed``."""
    return copy.deepcopy(_structured_once(schema))


@functools.cache
def _structured_once(schema: type) -> DictConfig:
    node = OmegaConf.structured(schema)
    for spec in fields(schema):
        name = config_key(spec)
        if name != spec.name:
            with open_dict(node):
                node[name] = node._get_node(spec.name)
                del node[spec.name]
    return node


def one_line(text: str) -> str:
    return " ".join(text.split())
