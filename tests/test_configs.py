"""Every value in config/*.yaml equals its dataclass default, or is marked as a deliberate override.

The yamls list every option of a stage so that it can be overridden on the
command line (Hydra refuses a key the yaml does not hold unless it is given
as ``+key=value``), which restates the dataclass defaults. The dataclasses
stay the one source of truth: this test fails when a yaml value and the
default of the field it sets disagree, unless the yaml says the difference is
meant.

Convention: a value that differs from its default ends its line with a
comment that starts with ``# override``, followed by the reason
(``# override: why``) or pointing at the comment just above it
(``# override (see above)``). A value that equals its default carries no mark
(a stale mark fails too, so marks stay true when a default changes).

Which dataclass owns a key: the top-level groups (``common``, ``dataset``,
``checkpoint``, ...) are the fields of fairseq's ``FairseqConfig``; ``task``,
``model``, ``criterion``, ``optimizer`` and ``lr_scheduler`` are the dataclass
registered under their ``_name``. ``hydra`` is Hydra's own and not checked. A
key the dataclass does not have fails.

How values compare:

- ``???`` (required, given on the command line) needs no mark where the
  default is MISSING or None: it only asks for a value the dataclass leaves
  open, and a run without it stops at start-up. Elsewhere it is an override.
- A value for a field whose default is MISSING needs no mark: there is no
  default to disagree with.
- None is a value like any other (``null`` against a default of 0.1 is an
  override; ``null`` against None is not).
- Interpolations (``${...}``) are compared as text, unresolved: ``${common.seed}``
  equals a default of ``II("common.seed")``; any other one is an override.
- Numbers compare by value (``0`` equals ``0.0``; ``1e-4`` is read as Hydra
  reads it, a float), booleans only with booleans, tuples as lists. A string
  that fairseq evaluates as a Python literal (``adam_betas: (0.9,0.98)``)
  compares by that literal, so spacing does not matter.
"""

import ast
import dataclasses
import enum
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

# importing these fills fairseq's registries (the criterion, optimizer and lr_scheduler ones in REGISTRIES)
import fairseq.criterions  # noqa: F401
import fairseq.models
import fairseq.optim  # noqa: F401
import fairseq.optim.lr_scheduler  # noqa: F401
import fairseq.tasks
from fairseq.dataclass.configs import FairseqConfig
from fairseq.registry import REGISTRIES

import fairseq_ser

fairseq_ser.register()

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
YAMLS = sorted(CONFIG_DIR.glob("*.yaml"))
MARK = re.compile(r"#\s*override\b")
NOT_CHECKED = {"hydra"}  # Hydra's own settings, not a fairseq dataclass


def registries():
    """Group name -> {_name: dataclass} for the groups chosen by ``_name``."""
    return {
        "task": fairseq.tasks.TASK_DATACLASS_REGISTRY,
        "model": fairseq.models.MODEL_DATACLASS_REGISTRY,
        **{group: REGISTRIES[group]["dataclass_registry"] for group in ("criterion", "optimizer", "lr_scheduler")},
    }


def fixed_groups():
    """Group name -> dataclass for FairseqConfig's fields that are dataclasses themselves."""
    return {f.name: f.type for f in dataclasses.fields(FairseqConfig) if dataclasses.is_dataclass(f.type)}


def default_of(f: dataclasses.Field):
    """A field's declared default; II("x") interpolations stay their "${x}" text."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING  # a field without any default is required


def normalized(value):
    """The value as fairseq uses it, for comparison (see the module docstring)."""
    if isinstance(value, enum.Enum):
        return normalized(value.value)
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    if isinstance(value, str) and not value.startswith("${"):
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
        return normalized(literal) if isinstance(literal, (list, tuple)) else value
    return value


def same(a, b) -> bool:
    a, b = normalized(a), normalized(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (bool, str, list)) or isinstance(b, (bool, str, list)):
        return type(a) is type(b) and a == b  # True is not 1, "1" is not 1
    return a == b  # numbers: 0 equals 0.0


def needs_mark(value, default) -> bool:
    """Whether a yaml value must carry an override mark, given the field's default (rules: module docstring)."""
    if default == MISSING:
        return False
    if value == MISSING:
        return default is not None
    return not same(value, default)


def marked_lines(text: str):
    """Key path -> (line number, whether the line ends with an override mark), from the yaml's node positions."""
    lines = text.splitlines()
    out = {}

    def walk(node, path):
        for key, value in node.value:
            here = path + (key.value,)
            inline = isinstance(value, yaml.ScalarNode) or getattr(value, "flow_style", False)
            # a scalar or [flow, list] ends on its key's line; a block value starts below it
            end = value.end_mark if inline else key.end_mark
            rest = lines[end.line][end.column:].lstrip(": ") if end.line < len(lines) else ""
            out[here] = (key.start_mark.line + 1, bool(MARK.match(rest)))
            if isinstance(value, yaml.MappingNode):
                walk(value, here)

    walk(yaml.compose(text), ())
    return out


def leaves(values: dict, owner, path):
    """(path, value, default, problem) for every leaf under ``values``, owned by dataclass ``owner``."""
    fields = {f.name: f for f in dataclasses.fields(owner)}
    for key, value in values.items():
        here = path + (key,)
        if key == "_name":  # chooses the dataclass; checked by the caller
            continue
        if key not in fields:
            yield here, value, None, f"{owner.__name__} has no field {key!r}"
        elif isinstance(value, dict) and dataclasses.is_dataclass(fields[key].type):
            yield from leaves(value, fields[key].type, here)
        else:
            yield here, value, default_of(fields[key]), None


def owner_of(group: str, body):
    """The dataclass that owns a top-level group of a yaml, or a problem (str)."""
    fixed, chosen = fixed_groups(), registries()
    if group in fixed:
        return fixed[group]
    if group in chosen:
        name = body.get("_name") if isinstance(body, dict) else None
        if name in chosen[group]:
            return chosen[group][name]
        return f"{group}._name={name!r} is not a registered {group} with a dataclass"
    return f"{group!r} is not a group of FairseqConfig"


def check(path: Path):
    """Problems in one yaml, each a line naming the file and line, the key, the value and the default."""
    text = path.read_text(encoding="utf-8")
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    marks = marked_lines(text)
    problems = []
    for group, body in values.items():
        if group in NOT_CHECKED:
            continue
        owner = owner_of(group, body)
        if isinstance(owner, str):
            problems.append(f"{path.name}:{marks[(group,)][0]}: {owner}")
            continue
        for keys, value, default, problem in leaves(body, owner, (group,)):
            line, marked = marks[keys]
            where = f"{path.name}:{line}: {'.'.join(keys)}"
            if problem:
                problems.append(f"{where}: {problem}")
            elif needs_mark(value, default) and not marked:
                problems.append(f"{where}: {value!r} differs from the default {default!r} of "
                                f"{owner.__name__}, and the line has no '# override' mark")
            elif marked and not needs_mark(value, default):
                problems.append(f"{where}: {value!r} equals the default {default!r} of {owner.__name__}, "
                                f"but the line is marked '# override'")
    return problems


def test_there_are_yamls():
    assert {p.name for p in YAMLS} >= {"vft.yaml", "tapt.yaml", "ptapt.yaml", "ptapt_stage1.yaml"}


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_values_equal_defaults_unless_marked(path):
    problems = check(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_convention_is_stated(path):
    assert "# override" in path.read_text(encoding="utf-8").split("\n\n")[0], \
        f"{path.name}: the opening comment does not state the '# override' convention"


def test_the_check_names_file_key_value_and_default(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "# A value unlike its dataclass default ends with '# override: why'.\n"
        "\n"
        "optimization:\n"
        "  lr: [0.5]\n"                              # differs, unmarked
        "  max_epoch: 0  # override: stale\n"        # equals the default, marked
        "  clip_norm: 1.0  # override: clipped\n"    # differs, marked: fine
        "  no_such_option: 1\n"
        "model:\n"
        "  _name: no_such_model\n"
        "criterion:\n"
        "  _name: ser_cross_entropy\n"
        "something: {}\n"
    )
    assert check(bad) == [
        "bad.yaml:4: optimization.lr: [0.5] differs from the default [0.25] of OptimizationConfig, "
        "and the line has no '# override' mark",
        "bad.yaml:5: optimization.max_epoch: 0 equals the default 0 of OptimizationConfig, "
        "but the line is marked '# override'",
        "bad.yaml:7: optimization.no_such_option: OptimizationConfig has no field 'no_such_option'",
        "bad.yaml:8: model._name='no_such_model' is not a registered model with a dataclass",
        "bad.yaml:12: 'something' is not a group of FairseqConfig",
    ]


def test_rules_for_required_values_interpolations_and_literals():
    assert not needs_mark(MISSING, MISSING) and not needs_mark(MISSING, None)
    assert needs_mark(MISSING, 0.1)  # '???' where the dataclass has a value
    assert not needs_mark("some/path", MISSING)  # nothing to disagree with
    assert needs_mark(None, 0.1) and not needs_mark(None, None)
    assert not needs_mark("${common.seed}", "${common.seed}") and needs_mark("${common.seed}", 1)
    assert not needs_mark("(0.9,0.999)", (0.9, 0.999)) and needs_mark("(0.9,0.98)", (0.9, 0.999))
    assert not needs_mark(0, 0.0) and needs_mark(1, True) and needs_mark("1", 1)
