"""Load a scenario: size-limited safe YAML, ``--set dotted.key=value`` overrides, validation.

Every failure raises :class:`ScenarioError` whose message names the key path, the bad value and
what is allowed; the CLI prints it and exits with status 2. Nothing here writes to disk.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sim.scenario import Scenario, ScenarioError

MAX_SCENARIO_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_NODES = 200_000
"""Values after expanding YAML aliases; a few hundred bytes of nested aliases can otherwise expand
to billions of nodes ("billion laughs")."""
MAX_YAML_NESTING = 4 * MAX_DEPTH
"""Nesting the YAML scanner accepts (flow brackets plus block indentation levels), checked token by token:
PyYAML's pure-Python scanner is quadratic in flow depth (40 KB of ``[`` took 2 s before failing), so a
deep document is refused at its first too-deep bracket. Shallower but still too deep documents get the
exact check (MAX_DEPTH) after parsing."""


_CONSTRUCT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
"""What PyYAML's safe constructors raise on a malformed tagged or implicit scalar (``!!int 0x``,
``!!float ''``, ``!!bool maybe``, ``2001-02-30``, ``!!timestamp xyz``) instead of a ``YAMLError``."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that refuses duplicate keys instead of keeping the last, and
    turns the constructors' stray Python exceptions into ``ConstructorError`` with the line and column."""

    def _check_nesting(self) -> None:
        if self.flow_level + len(self.indents) > MAX_YAML_NESTING:
            raise yaml.scanner.ScannerError(None, None, f"nested too deeply (more than {MAX_YAML_NESTING} levels)",
                                            self.get_mark())

    def compose_node(self, parent, index):
        # count while composing: a 1 MB file of small items is refused after MAX_NODES, not after all of them
        self._composed = getattr(self, "_composed", 0) + 1
        if self._composed > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} values",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def fetch_flow_collection_start(self, TokenClass):
        super().fetch_flow_collection_start(TokenClass)
        self._check_nesting()

    def add_indent(self, column):
        added = super().add_indent(column)
        if added:
            self._check_nesting()
        return added

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCT_ERRORS as e:
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = _short(node.value) if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
            detail = f" ({e})" if isinstance(e, (ValueError, OverflowError)) else ""  # not "'NoneType' object..."
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} as {tag}{detail}", node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):  # e.g. ``!!set [1]``: the base class says what it found
            return super().construct_mapping(node, deep=deep)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:
                dup = False
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_short(key)}", key_node.start_mark)
            try:
                seen.add(key)
            except TypeError:
                pass
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (no Python tags), at most 1 MB."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read ({e.strerror})") from None
    except ValueError:  # a NUL byte in the path
        shown = str(p).replace("\x00", "\\x00")
        raise ScenarioError(f"{shown}: not a valid file name (NUL byte)") from None
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(f"{p}: not a regular file")
    if st.st_size > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{p}: {st.st_size} bytes exceeds the {MAX_SCENARIO_BYTES}-byte limit for scenario files")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)  # bounded: the file may have grown since stat()
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read ({e.strerror})") from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{p}: more than {MAX_SCENARIO_BYTES} bytes, the limit for scenario files")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: not UTF-8 text") from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, origin: str = "<string>") -> dict[str, Any]:
    """Parse scenario text: one YAML mapping with string keys, no Python tags, no duplicate keys,
    bounded depth and size; every problem is a :class:`ScenarioError` naming ``origin``."""
    if not text.strip():
        raise ScenarioError(f"{origin}: empty scenario file")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "python/" in str(e):
            problem = f"{problem}; Python object tags are not allowed in scenarios"
        elif "tag:yaml.org,2002:merge" in str(e):
            problem = f"{problem}; YAML merge keys (<<) are not supported in scenarios"
        raise ScenarioError(f"{origin}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ScenarioError(f"{origin}: YAML nested too deeply") from None
    if data is None:
        raise ScenarioError(f"{origin}: empty scenario file")
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: a scenario must be a mapping of sections, got {type(data).__name__}")
    check_structure(data, origin)
    return data


def check_structure(data: Any, origin: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, more than MAX_NODES values once aliases are expanded,
    and non-string keys. Shared (aliased) nodes are sized once, so this is linear in the file."""
    sizes: dict[int, int] = {}

    def size(obj: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ScenarioError(f"{origin}: nested deeper than {MAX_DEPTH} levels")
        if not isinstance(obj, (dict, list)):
            return 1
        known = sizes.get(id(obj))
        if known is not None:
            return known
        n = 1
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise ScenarioError(f"{origin}: key {_short(k)} must be a string")
                n += size(v, depth + 1)
        else:
            for v in obj:
                n += size(v, depth + 1)
        if n > MAX_NODES:
            raise ScenarioError(f"{origin}: more than {MAX_NODES} values (after expanding YAML aliases)")
        sizes[id(obj)] = n
        return n

    size(data, 0)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``dotted.key=value`` (value parsed as YAML; list items by index, e.g. fleet.groups.0.count=5)."""
    if "=" not in assignment:
        raise ScenarioError(f"--set {assignment!r}: expected dotted.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ScenarioError(f"--set {assignment!r}: empty key")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""  # noqa: S506 - safe subclass
    except yaml.constructor.ConstructorError:  # a tag (``!!python/...``, ``!foo``): refused, never a string
        raise ScenarioError(f"--set {key.strip()}: YAML tags (!!python/..., !name) are not allowed in overrides; "
                            "quote the value to pass it as text") from None
    except yaml.YAMLError:  # not YAML (``a: b: c``, ``{a``): the text itself
        value = raw
    except RecursionError:
        raise ScenarioError(f"--set {key.strip()}: value nested too deeply") from None
    check_structure(value, f"--set {key.strip()}")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(part, node, here)]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ScenarioError(f"--set {key}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, node, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(f"--set {key}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not a section")


def _index(part: str, node: list, where: str) -> int:
    if not (part.isascii() and part.isdigit()) or int(part) >= len(node):  # "²".isdigit() but int("²") fails
        raise ScenarioError(f"--set {where}: index {part!r} not in 0..{len(node) - 1}")
    return int(part)


def _loc(loc: tuple) -> str:
    out = ""
    for p in loc:
        if isinstance(p, str) and not p.isprintable():  # no raw control characters (terminal escapes) in messages
            p = _short(p)
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the model that owns ``loc[:-1]`` (to list allowed keys on an unknown key)."""
    cur: Any = model
    for p in loc[:-1]:
        if isinstance(p, int) or cur is None:
            continue
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            f = cur.model_fields.get(p)
            if f is None:
                return None
            cur = _inner(f.annotation)
        else:
            cur = None
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return None


def _inner(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        r = _inner(a)
        if r is not None:
            return r
    return None


_OWN_PATH = re.compile(r"^((?:[A-Za-z_][\w]*|\[\d+\])(?:\.[A-Za-z_]\w*|\[\d+\])*): ")


def _is_union_tag(p: Any) -> bool:
    """pydantic adds the union member to error locations (``str``, ``dict[str,...]``): not a key."""
    return isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool", "dict", "list", "tuple"))


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        typ = e["type"]
        if typ == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(e["loc"]))
            msg = f"unknown key {_short(loc[-1])}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
            lines.append(f"{_loc(loc[:-1])}: {msg}{_did_you_mean(loc[-1], allowed)}")
            continue
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        loc = tuple(p for p in loc if not _is_union_tag(p))
        sub = _OWN_PATH.match(msg)
        if typ == "value_error" and sub:  # the validator named a sub-key: join the paths
            path = _loc(loc) if loc else ""
            head = sub.group(1)
            joined = f"{path}.{head}" if path and not head.startswith("[") else f"{path}{head}"
            lines.append(f"{joined}: {msg[sub.end():]}")
            continue
        if typ == "missing":
            lines.append(f"{_loc(loc)}: required key is missing")
            continue
        got = e.get("input")
        if typ not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
            msg = f"{msg} (got {_short(got)})"
        if typ == "literal_error":
            msg += _did_you_mean(got, re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", ""))))
        lines.append(f"{_loc(loc)}: {msg}")
    return "\n".join(lines)


def _did_you_mean(word: Any, options: list[str] | None) -> str:
    """``"; did you mean 'X'?"`` for the option closest to ``word`` (difflib ratio >= 0.6), else ``""``
    (also when the allowed options are unknown, e.g. a free-form mapping's key)."""
    if not isinstance(word, str) or not options:
        return ""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate(data: dict[str, Any], origin: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario mapping, including the chosen strategy's params and the target model."""
    from algorithms.registry import get_strategy_class, strategy_names  # noqa: PLC0415 (keeps import light)
    from devices.workload import load_arch  # noqa: PLC0415

    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(f"{origin}: invalid scenario\n" + format_validation_error(e, Scenario)) from None
    except RecursionError:
        raise ScenarioError(f"{origin}: scenario nested too deeply") from None
    specs = [("algorithm", sc.algorithm)] + [(f"policies.{k}", v) for k, v in (sc.policies or {}).items()]
    for where, spec in specs:
        if spec.name not in strategy_names():
            raise ScenarioError(f"{origin}: invalid scenario\n{where}.name: unknown strategy {_short(spec.name)}; "
                                f"allowed: {', '.join(strategy_names())}")
        _adopt_defaults(spec, where, origin)
        params_model = get_strategy_class(spec.name).Params
        try:
            params_model.model_validate(spec.params)
        except ValidationError as e:
            raise ScenarioError(f"{origin}: invalid scenario\n"
                                + format_validation_error(e, params_model, (*where.split("."), "params"))) from None
    arch = _load_arch(sc.workload.model, base_dir, origin)
    if sc.workload.seq_len > arch.usable_positions:
        raise ScenarioError(
            f"{origin}: invalid scenario\nworkload.seq_len: {sc.workload.seq_len} exceeds the model's {arch.usable_positions} positions")
    for where, spec in specs:
        cls = get_strategy_class(spec.name)
        try:
            problems = cls.check_params(cls.Params.model_validate(spec.params), arch.num_layers,
                                        sc.learning.kind == "real")
        except (ArithmeticError, TypeError, ValueError) as e:  # e.g. a 400-digit bandit parameter
            raise ScenarioError(f"{origin}: invalid scenario\n{where}.params: invalid value ({e})") from None
        for key, msg in problems:
            raise ScenarioError(f"{origin}: invalid scenario\n{where}.params.{key}: {msg}")
    for key, path in _file_refs(sc):
        p = Path(path) if Path(path).is_absolute() or base_dir is None else base_dir / path
        if not _is_file(p):
            raise ScenarioError(f"{origin}: invalid scenario\n{key}: file {_short(path)} not found")
    _check_trace_files(sc, base_dir, origin)
    if sc.learning.kind == "real":
        _check_learning(sc, origin)
    return sc


def _check_learning(sc: Scenario, origin: str) -> None:
    """Sizes that need the dataset (loaded without torch): test split and per-device minimum."""
    from learning.data import load_dataset  # noqa: PLC0415 (numpy only)

    ln = sc.learning
    _check_proxy_model(ln.model, origin, ln.allow_download)
    try:
        n = len(load_dataset(ln.dataset).labels)
    except (FileNotFoundError, RuntimeError) as e:
        raise ScenarioError(f"{origin}: invalid scenario\nlearning.dataset: {e}") from None
    if ln.test_size >= n:
        raise ScenarioError(f"{origin}: invalid scenario\nlearning.test_size: {ln.test_size} leaves no training data "
                            f"({ln.dataset} has {n} examples)")
    n_train = min(n - ln.test_size, ln.train_examples or n)
    if sc.n_devices * ln.partition.min_size > n_train:
        raise ScenarioError(
            f"{origin}: invalid scenario\nlearning.partition.min_size: {sc.n_devices} devices x {ln.partition.min_size} "
            f"exceeds the {n_train} training examples")
    if ln.eval.examples is not None and ln.eval.examples > ln.test_size:
        raise ScenarioError(f"{origin}: invalid scenario\nlearning.eval.examples: {ln.eval.examples} exceeds "
                            f"learning.test_size {ln.test_size}")


def _check_trace_files(sc: Scenario, base_dir: Path | None, origin: str) -> None:
    """Parse every referenced CSV now, so a bad file is bad input (exit 2) before anything is written."""
    from devices.dynamics import read_availability  # noqa: PLC0415 (numpy: keeps `import sim.loader` light)
    from devices.errors import DeviceInputError  # noqa: PLC0415
    from devices.network import load_trace  # noqa: PLC0415

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() or base_dir is None else base_dir / p

    for name, c in sc.network.classes.items():
        if c.trace:
            try:
                load_trace(resolve(c.trace))
            except (ValueError, OSError, csv.Error) as e:  # csv.Error: e.g. a field over the csv module's limit
                raise ScenarioError(f"{origin}: invalid scenario\nnetwork.classes.{name}.trace: {e}") from None
    if sc.dynamics.availability.kind == "trace":
        ids, labels = sc.device_ids()
        path = resolve(sc.dynamics.availability.trace)
        try:
            read_availability(path, ids, labels)
        except DeviceInputError as e:
            raise ScenarioError(f"{origin}: invalid scenario\ndynamics.availability.trace: {e}") from None
        except (ValueError, OSError, csv.Error) as e:  # not UTF-8, an oversized CSV field
            raise ScenarioError(f"{origin}: invalid scenario\n"
                                f"dynamics.availability.trace: cannot read {path}: {e}") from None


def _is_file(p: Path) -> bool:
    """``p.is_file()``, False (not an exception) for names the OS refuses (too long, NUL byte)."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _load_arch(model: str, base_dir: Path | None, origin: str) -> Any:
    """``devices.workload.load_arch`` (which bounds and checks the config.json) with every failure, names
    the OS refuses included, as a ScenarioError naming workload.model."""
    from devices.workload import load_arch  # noqa: PLC0415

    try:
        return load_arch(model, base_dir)
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ScenarioError(f"{origin}: invalid scenario\nworkload.model: {_short(model)}: cannot read "
                            f"({e.strerror or e})") from None
    except (ValueError, TypeError, KeyError, ArithmeticError) as e:
        raise ScenarioError(f"{origin}: invalid scenario\nworkload.model: {e}") from None


_PROXY_NAMES = ("minilm", "tiny-bert", "tiny-llama")
"""learning.models.MODEL_NAMES (not imported here: that module imports torch)."""
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def _check_proxy_model(name: str, origin: str, allow_download: bool = False) -> None:
    """learning.model must be a packaged name, an existing local folder with a config.json, or a Hugging Face
    name (``org/model``): no URLs, no control characters, no paths that do not exist (which transformers would
    take for a Hub name). Local paths resolve as learning.models.load_proxy resolves them (working directory);
    whatever the name, the model is loaded with ``trust_remote_code=False``."""
    if name in _PROXY_NAMES:
        return
    bad = f"{origin}: invalid scenario\nlearning.model: "
    allowed = (f"allowed: {', '.join(_PROXY_NAMES)}, a Hugging Face name (org/model) "
               "or a local folder with a config.json")
    try:
        local = Path(name).expanduser()
        exists = local.exists()
    except (OSError, ValueError, RuntimeError):  # too long, NUL byte, ~unknown_user
        exists = False
    if exists:
        if not _is_file(local / "config.json"):
            raise ScenarioError(f"{bad}local path {_short(name)} is not a folder with a config.json; {allowed}")
        return
    if not _HUB_NAME.fullmatch(name) or ".." in name or "--" in name:
        raise ScenarioError(f"{bad}{_short(name)} is not a packaged model, an existing local folder or a "
                            f"Hugging Face name; {allowed}")
    if not allow_download and not _in_hub_cache(name):
        raise ScenarioError(f"{bad}{_short(name)} is not available offline (not packaged, not a local folder, not in "
                            "the Hugging Face cache); provide it as a local folder with its config.json, tokenizer "
                            "and weights (learning.model: /path/to/folder), or set learning.allow_download: true "
                            "to download it when online")


def _in_hub_cache(name: str) -> bool:
    """Whether the local Hugging Face cache holds ``name``'s config.json (a file lookup, no network; the offline
    environment is set by ``learning/__init__.py``, imported before huggingface_hub)."""
    import learning  # noqa: F401, PLC0415 - sets HF_HUB_OFFLINE before huggingface_hub is imported
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # huggingface_hub refuses the repository id
        return False


def _file_refs(sc: Scenario) -> list[tuple[str, str]]:
    refs = [(f"network.classes.{k}.trace", c.trace) for k, c in sc.network.classes.items() if c.trace]
    if sc.dynamics.availability.trace:
        refs.append(("dynamics.availability.trace", sc.dynamics.availability.trace))
    return refs


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> tuple[Scenario, Path]:
    """Read, override and validate; returns the scenario and the directory relative paths resolve in."""
    p = Path(path)
    data = read_yaml(p)
    if "matrix" in data or "base" in data:
        raise ScenarioError(f"{p}: this is a sweep file (keys {', '.join(k for k in ('base', 'matrix') if k in data)}), "
                            f"not a scenario: use fedfleet sweep {p}")
    meta = data.pop("_meta", None)  # a run's resolved scenario.yaml: what fedfleet wrote about it
    for a in overrides or []:
        apply_override(data, a)
    check_structure(data, str(p))
    if data.get("name") is None:  # the file stem, reduced to what sim.scenario.NAME_RE allows (ASCII)
        name = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in p.stem)[:100]
        data["name"] = name if name and name[0].isascii() and name[0].isalnum() else "scenario"
    base = p.resolve().parent
    recorded = meta.get("base_dir") if isinstance(meta, dict) else None
    if isinstance(recorded, str) and recorded and Path(recorded).is_dir():
        base = Path(recorded)  # relative paths of a run's scenario resolve where its run resolved them
    try:
        return validate(data, str(p), base), base
    except ScenarioError as e:
        raise ScenarioError(str(e) + _name_override_hint(str(e), overrides or [])) from None


_NAME_OVERRIDE = re.compile(r"^(algorithm|policies\.[^.=]+)\.name=(.*)$")


def _name_override_hint(message: str, overrides: list[str]) -> str:
    """A hint for ``--set algorithm.name=X`` whose file keeps the params of another strategy: the params
    of the old strategy fail the new one's schema, and replacing the whole block is what was meant."""
    for o in overrides:
        m = _NAME_OVERRIDE.match(o.strip())
        if m and f"\n{m.group(1)}.params" in message:
            where, name = m.group(1), m.group(2).strip()
            return (f"\nhint: --set {where}.name changes the strategy but keeps the params written for the old "
                    f"one; replace the whole block: --set '{where}={{name: {name}}}' (add params: {{...}} as needed)")
    return ""


LATER_KEYS: tuple[tuple[tuple[str, ...], Callable[[dict], bool]], ...] = (
    (("policies",), lambda d: d.get("policies") is None),
    (("faults",), lambda d: d.get("faults") is None),
    (("dynamics", "power_mode", "dwell_rounds"), lambda d: d["dynamics"]["power_mode"]["kind"] != "dwell"),
    (("dynamics", "background_load", "phi"), lambda d: d["dynamics"]["background_load"]["kind"] != "ar1"),
    (("learning", "allow_download"), lambda d: not d["learning"]["allow_download"]),
    (("sparsity",), lambda d: d["sparsity"] == {"constraint": "per_device", "spread": 0.2, "weighting": "uniform"}),
    (("fleet", "calibration"), lambda d: d["fleet"]["calibration"] == "datasheet"),
    (("learning", "autocast"), lambda d: d["learning"]["autocast"] == "none"),
    (("learning", "lora_scaling"), lambda d: d["learning"]["lora_scaling"] == "standard"),
    (("server",), lambda d: d.get("server") is None),
    (("training", "eval_early"), lambda d: d["training"]["eval_early"] is None),
)
"""Keys added after results were published, each with the condition under which it changes nothing
(absent, or its kind unused, or off). The resolved scenario drops a key while its condition holds, so
a scenario that does not use it keeps the digest (and run id) it had before the key existed."""


RENAMED_KEYS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("learning",), "device", "compute_device"),
)
"""(parent path, key's name now, its name when results were published): the digest uses the old name, so
a renamed key keeps every run id; the loader accepts the old name as well."""


def resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Strategy ``name``'s parameters with every default filled in (its ``Params`` schema, JSON-compatible);
    ``params`` unchanged when the name is unknown or the parameters do not validate."""
    from algorithms.registry import get_strategy_class  # noqa: PLC0415 (keeps import light)

    try:
        return get_strategy_class(name).Params.model_validate(params).model_dump(mode="json")
    except (KeyError, ValidationError):
        return dict(params)


def _adopt_defaults(spec: Any, where: str, origin: str) -> None:
    """Read the ``defaults`` a resolved scenario recorded (see :func:`resolved_dict`): a recorded value that
    differs from what the strategy would use now becomes a param (so an old run reproduces under changed
    defaults); values equal to the current defaults change nothing. ``spec.defaults`` is emptied."""
    from algorithms.registry import get_strategy_class  # noqa: PLC0415

    if not spec.defaults:
        return
    both = sorted(set(spec.defaults) & set(spec.params))
    if both:
        raise ScenarioError(f"{origin}: invalid scenario\n{where}.defaults.{both[0]}: also set in {where}.params; "
                            f"allowed: a parameter in params or in defaults, not both")
    model = get_strategy_class(spec.name).Params
    try:
        model.model_validate({**spec.params, **spec.defaults})
    except ValidationError as e:
        raise ScenarioError(f"{origin}: invalid scenario\n"
                            + format_validation_error(e, model, (*where.split("."), "defaults"))) from None
    now = resolved_params(spec.name, spec.params)
    for key, value in spec.defaults.items():
        if resolved_params(spec.name, {**spec.params, key: value}).get(key) != now.get(key):
            spec.params[key] = value
    spec.defaults = {}


def _specs(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The strategy blocks of a resolved scenario mapping: ``algorithm`` and each of ``policies``."""
    return [d["algorithm"], *(d.get("policies") or {}).values()]


def resolved_dict(sc: Scenario) -> dict[str, Any]:
    """The fully resolved scenario (every default filled in), JSON-compatible; keys of
    :data:`LATER_KEYS` that change nothing are left out. Each strategy block records, beside the
    ``params`` as given, the ``defaults`` of every other parameter of its strategy (the values the run
    used), so the saved ``scenario.yaml`` reproduces the run even if a default changes later."""
    d = sc.model_dump(mode="json")
    for path, unused in LATER_KEYS:
        if unused(d):
            parent = d
            for k in path[:-1]:
                parent = parent[k]
            parent.pop(path[-1], None)
    for spec in _specs(d):
        spec["defaults"] = {k: v for k, v in resolved_params(spec["name"], spec["params"]).items()
                            if k not in spec["params"]}
    return d


def scenario_digest(sc: Scenario) -> str:
    """sha256 of the canonical JSON of the resolved scenario, excluding output settings and the recorded
    strategy ``defaults`` (a value there that differs from the current default was made a param on
    loading), so a run's own ``scenario.yaml`` has the digest of the scenario it came from."""
    d = resolved_dict(sc)
    d.pop("output", None)
    for path, now, old in RENAMED_KEYS:
        parent = d
        for k in path:
            parent = parent[k]
        if now in parent:
            parent[old] = parent.pop(now)
    for spec in _specs(d):
        spec.pop("defaults", None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()

