"""``model=custom``: your own Keras builder, named by ``model.target``, trained and measured as a
zoo model.

    zoo-train model=custom model.target=mypkg.models:build model.width=64 model.depth=8
    zoo-train model=custom model.target=models.py:build     # a file, from where you launch
    zoo-train -m model=custom model.target=mypkg.models:build model.width=16,64

``model.target`` is ``PKG.MODULE:FUNCTION`` (importable: installed, on ``PYTHONPATH``, or in the
folder you launch from, searched last) or
``FILE.py:FUNCTION`` (relative to the folder you launch from), the dotted path of Hydra's
``_target_``. The function has the zoo builders' signature, ``build(input_shape, num_outputs,
**knobs) -> keras.Model``; every other key under ``model.`` is one of its keyword arguments, by
the same name (zoo.schema.OpenSection), logged to MLflow as ``model.width`` etc. The model must
take the data's ``input_shape`` and end in ``num_outputs`` logits (classification) or predictions
(regression): no softmax, since the loss applies it itself (from logits, the stable form).

What can be checked without importing the user's code (so without TensorFlow) is checked with
the config: the target's form, that its module or file exists (``importlib.util.find_spec``
imports the parent packages of a dotted module, not the module), and, reading the module's
source with ``ast``, that it defines ``def FUNCTION(...)`` taking two positional arguments and
every knob given (``**kwargs`` takes any), and none it requires is left out. A function the
source does not define plainly (assigned, imported, decorated, a class, a compiled module) is
checked by its ``inspect.signature`` when it is built. What only the built model can tell is
checked then, before training: a keras.Model, its input shape, its outputs, no final softmax
(seen in functional and Sequential models; a subclassed model's last operation is not). Every
error is one line naming the key.

A custom model takes whatever the data is (no ``input_kind``) and has no memory estimate
(zoo.budget). It has no layer roles: the train step finds what to measure by looking at it, as
``zoo.GradientMonitor`` does (zoo.monitor.discover), and names what it cannot read.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from zoo._lazy import keras
from zoo.launch import from_launch_folder, launch_folder
from zoo.models import MODELS
from zoo.schema import OpenSection, SpecError, file_digest

FORM = "PKG.MODULE:FUNCTION or FILE.py:FUNCTION"
DOTTED = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*")


@dataclass
class CustomConfig(OpenSection):
    target: str = field(default="???", metadata={"form": FORM})  # your builder: PKG.MODULE:FUNCTION or FILE.py:FUNCTION (from the launch folder)

    def __post_init__(self):
        super().__post_init__()
        check_statically(parse_target(self.target), self.knobs)

    def fingerprint(self) -> str | None:
        """The builder's source file's digest (None for a module without Python source)."""
        path = source_file(parse_target(self.target))
        return file_digest(path) if path else None


@dataclass(frozen=True)
class Target:
    text: str          # as given
    module: str        # dotted module name, "" for a file
    file: Path | None  # FILE.py, relative to the working directory
    function: str

    def __str__(self) -> str:
        return self.text


def parse_target(text: str) -> Target:
    if text == "???":  # OmegaConf's missing value, when a schema is built by hand
        raise SpecError("target", f"is missing: give model.target={FORM}")
    where, _, function = text.rpartition(":")
    if where and function.isidentifier():
        if where.endswith(".py"):
            return Target(text, "", Path(where), function)
        if DOTTED.fullmatch(where):
            return Target(text, where, None, function)
    raise SpecError("target", f"{text!r} is not {FORM} (e.g. mypkg.models:build, or models.py:build)")


# --- before TensorFlow: the module or file, and the function's parameters from its source -------
def check_statically(target: Target, knobs: dict) -> None:
    source, where = _source(target)
    if source is None:
        return  # compiled or namespace module: checked when built
    try:
        tree = ast.parse(source, where)
    except SyntaxError as err:
        raise SpecError("target", f"{where} does not parse: line {err.lineno}: {err.msg}") from None
    found = _plain_def(tree, target.function)
    if found is None:
        return  # bound some other way: checked when built
    if found == "undefined":
        functions = sorted(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
        raise SpecError("target", f"{where} defines no {target.function!r}; its top-level functions "
                                  f"and classes: {', '.join(functions) or 'none'}")
    check_call(Params.from_ast(found.args), knobs, target, f"({ast.unparse(found.args)})")


def _source(target: Target) -> tuple[str | None, str]:
    """The target module's source and where it is; None when there is no Python source to read."""
    if target.file is not None:
        path = Path(from_launch_folder(target.file))
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise SpecError("target", f"file {str(target.file)!r} {problem} (relative paths are from "
                                      f"{launch_folder()})")
        return _read(path), str(target.file)
    hint = (f"put its folder on PYTHONPATH, or give its file: model.target=path/to/"
            f"{target.module.rpartition('.')[2]}.py:{target.function}")
    try:
        spec = _find_spec(target.module)
    except ModuleNotFoundError as err:  # a parent package is missing
        raise SpecError("target", f"cannot find module {target.module!r} ({err}); {hint}") from None
    except Exception as err:  # a parent package failed on import
        raise SpecError("target", f"importing the package of {target.module!r} failed: "
                                  f"{type(err).__name__}: {_first_line(err)}") from None
    if spec is None:
        raise SpecError("target", f"cannot find module {target.module!r} on the Python path; {hint}")
    origin = spec.origin or ""
    if not (spec.has_location and origin.endswith(".py") and Path(origin).is_file()):
        return None, target.module
    return _read(Path(origin)), target.module


def _find_spec(module: str):
    """``importlib.util.find_spec`` with the launch folder searched too (:func:`_launch_folder`)."""
    _launch_folder()
    return importlib.util.find_spec(module)


def _launch_folder() -> None:
    """Search the folder zoo-train was started from for builder modules, after everything else
    on ``sys.path``, as ``python -m`` and Hydra's ``_target_`` in a script beside them would: a
    ``mybuilders.py`` next to the user's data is ``model.target=mybuilders:build``."""
    here = launch_folder()
    if here not in sys.path and not ("" in sys.path and here == os.getcwd()):
        sys.path.append(here)


def source_file(target: Target) -> Path | None:
    """The Python file the target's function is defined in, or None (no source file)."""
    if target.file is not None:
        path = Path(from_launch_folder(target.file))
        return path if path.is_file() else None
    try:
        spec = _find_spec(target.module)
    except Exception:  # refused when the config was checked
        return None
    origin = getattr(spec, "origin", None) or ""
    return Path(origin) if origin.endswith(".py") and Path(origin).is_file() else None


def _read(path: Path) -> str | None:
    try:
        with tokenize.open(path) as f:  # the encoding its coding line declares
            return f.read()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _plain_def(tree: ast.Module, name: str) -> ast.FunctionDef | str | None:
    """The module's ``def name``, if that is the one thing binding ``name`` at module level and it
    is undecorated; "undefined" if nothing binds it; None when it cannot be told from the source."""
    bindings, dynamic = [], False
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                bindings.append(node)
            dynamic |= node.name == "__getattr__"  # PEP 562: any name may exist
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                dynamic |= alias.name == "*"
                bound = alias.asname or alias.name.split(".")[0]
                if bound == name:
                    bindings.append(node)
            continue
        for child in ast.iter_child_nodes(node):  # assignments anywhere at module level, and
            if isinstance(child, ast.Name) and child.id == name and isinstance(child.ctx, ast.Store):
                bindings.append(node)  # the bodies of if / try / with / for at module level
            elif isinstance(child, (ast.stmt, ast.expr, ast.excepthandler, ast.withitem,
                                    ast.comprehension, ast.keyword, ast.match_case)):
                stack.append(child)
    if not bindings:
        return None if dynamic else "undefined"
    only = bindings[0]
    if len(bindings) == 1 and only in tree.body and isinstance(only, ast.FunctionDef) \
            and not only.decorator_list:
        return only
    return None


@dataclass(frozen=True)
class Params:
    """What a function's parameters accept, read from its source or its signature."""
    positional: tuple[str, ...]  # can be given by position, in order
    positional_only: int         # the first n of them cannot be given by name
    keyword_only: tuple[str, ...]
    required: frozenset[str]     # no default
    varargs: bool
    varkw: bool

    @classmethod
    def from_ast(cls, args: ast.arguments) -> "Params":
        positional = [a.arg for a in (*args.posonlyargs, *args.args)]
        defaulted = set(positional[len(positional) - len(args.defaults):]) if args.defaults else set()
        keyword_only = [a.arg for a in args.kwonlyargs]
        required = {*(set(positional) - defaulted),
                    *(a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None)}
        return cls(tuple(positional), len(args.posonlyargs), tuple(keyword_only), frozenset(required),
                   args.vararg is not None, args.kwarg is not None)

    @classmethod
    def from_signature(cls, signature: inspect.Signature) -> "Params":
        P = inspect.Parameter
        ps = list(signature.parameters.values())
        return cls(tuple(p.name for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)),
                   sum(p.kind is P.POSITIONAL_ONLY for p in ps),
                   tuple(p.name for p in ps if p.kind is P.KEYWORD_ONLY),
                   frozenset(p.name for p in ps if p.default is P.empty
                             and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)),
                   any(p.kind is P.VAR_POSITIONAL for p in ps), any(p.kind is P.VAR_KEYWORD for p in ps))


def check_call(params: Params, knobs: dict, target: Target, shown: str) -> None:
    """``FUNCTION(input_shape, num_outputs, **knobs)`` binds: two positional arguments, every knob
    by name, every parameter without a default given."""
    if len(params.positional) < 2 and not params.varargs:
        raise SpecError("target", f"{target} must take (input_shape, num_outputs, **knobs); it takes {shown}")
    data_args = params.positional[:2]
    if params.positional_only > 2 and set(params.positional[2:params.positional_only]) & params.required:
        raise SpecError("target", f"{target} has positional-only parameters after the first two, which "
                                  f"no knob can give; it takes {shown}")
    named = params.positional[max(2, params.positional_only):] + params.keyword_only
    for knob in knobs:
        if knob in data_args:
            raise SpecError(knob, f"is not a knob: the zoo gives {target} the data's input_shape and "
                                  f"num_outputs as its first two arguments ({', '.join(data_args)})")
    unknown = [k for k in knobs if k not in named and not params.varkw]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise SpecError(unknown[0], f"{target} has no parameter{'s' if len(unknown) > 1 else ''} {names}; "
                                    f"its knobs: {', '.join(named) or 'none'}")
    missing = [p for p in named if p in params.required and p not in knobs]
    if missing:
        raise SpecError(missing[0], f"is missing: {target} has no default for "
                                    f"{', '.join(missing)}; give {' '.join(f'model.{p}=VALUE' for p in missing)}")


# --- after the import: the function, and the model it builds ------------------------------------
@MODELS.register("custom", schema=CustomConfig,
                 description="your own Keras builder: build(input_shape, num_outputs, **knobs) -> logits")
def build_custom(input_shape, num_outputs, *, target, **knobs):
    try:
        parsed = parse_target(target)
        builder = load(parsed)
        try:
            signature = inspect.signature(builder)
        except (TypeError, ValueError):  # no signature to read (a builtin): the call will tell
            signature = None
        if signature is not None:
            check_call(Params.from_signature(signature), knobs, parsed, str(signature))
        try:  # a knob of the wrong kind (width=abc), layers that do not take the data's rank
            model = builder(tuple(input_shape), num_outputs, **knobs)
        except Exception as err:
            raise SpecError("target", f"{parsed}({_shape(tuple(input_shape))}, {num_outputs}"
                                      f"{''.join(f', {k}={v!r}' for k, v in knobs.items())}) raised "
                                      f"{type(err).__name__}: {_first_line(err)[:300]}") from None
        check_model(model, parsed, tuple(input_shape), num_outputs)
    except SpecError as err:
        raise err.within("model") from None
    return model


def load(target: Target):
    """The target's function, importing its module (or executing its file)."""
    try:
        if target.file is None:
            _launch_folder()
            module = importlib.import_module(target.module)
        else:
            name = "_zoo_custom_" + re.sub(r"\W", "_", target.file.stem)
            spec = importlib.util.spec_from_file_location(name, from_launch_folder(target.file))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # as an import would: pickling and dataclasses look it up
            spec.loader.exec_module(module)
    except Exception as err:
        raise SpecError("target", f"importing {target.module or target.file} failed: "
                                  f"{type(err).__name__}: {_first_line(err)}") from None
    builder = getattr(module, target.function, None)
    if builder is None:
        raise SpecError("target", f"{target.module or target.file} has no {target.function!r}")
    if not callable(builder):
        raise SpecError("target", f"{target} is a {type(builder).__name__}, not a function")
    return builder


def check_model(model, target: Target, input_shape: tuple, num_outputs: int) -> None:
    """A keras.Model that takes the data's examples and ends in ``num_outputs`` logits."""
    if not isinstance(model, keras.Model):
        raise SpecError("target", f"{target} returned a {type(model).__name__}, not a keras.Model")
    built_by = f"the model {target} built"
    if isinstance(model, keras.Sequential) and not model.built:
        try:
            model.build((None, *input_shape))
        except Exception as err:
            raise SpecError("target", f"{built_by} does not take the data's input_shape "
                                      f"{_shape(input_shape)}: {type(err).__name__}: {_first_line(err)}") from None
    inputs, outputs = _symbolic(model)
    if inputs is None:  # subclassed: run it once on a batch of zeros (this also builds it)
        import numpy as np

        try:
            out = model(np.zeros((1, *input_shape), "float32"))
        except Exception as err:
            raise SpecError("target", f"{built_by} does not take the data's input_shape "
                                      f"{_shape(input_shape)}: {type(err).__name__}: {_first_line(err)}") from None
        out_shape = tuple(keras.ops.shape(_first(out)))
    else:
        if len(inputs) != 1:
            raise SpecError("target", f"{built_by} takes {len(inputs)} inputs; the data is one array of "
                                      f"examples of shape {_shape(input_shape)}")
        takes = tuple(inputs[0].shape[1:])
        if len(takes) != len(input_shape) or any(t is not None and t != d for t, d in zip(takes, input_shape)):
            raise SpecError("target", f"{built_by} takes inputs of shape {_shape(takes)} but the data's "
                                      f"input_shape is {_shape(input_shape)}; build it on "
                                      f"keras.Input(shape=input_shape)")
        out_shape = tuple(outputs[0].shape)
    if out_shape[-1] != num_outputs:
        raise SpecError("target", f"{built_by} gives {out_shape[-1]} outputs per example (its output's "
                                  f"last dimension) but the data has num_outputs={num_outputs}; end it "
                                  f"with Dense(num_outputs)")
    last = _last_operation(model)
    if last is not None and _is_softmax(last):
        raise SpecError("target", f"{built_by} ends in a softmax ({last.name}); drop it and return "
                                  f"logits: the zoo's loss applies the softmax itself (from logits)")


def _symbolic(model):
    """(inputs, outputs) of a functional or built Sequential model, (None, None) otherwise."""
    try:
        return list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        return None, None


def _last_operation(model):
    """The layer that makes the (first) output; inside a nested model, its own last layer."""
    _, outputs = _symbolic(model)
    if not outputs:
        return None
    history = getattr(outputs[0], "_keras_history", None)
    layer = history.operation if history else None
    if isinstance(layer, keras.Model):
        return _last_operation(layer) or layer
    return layer


def _is_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"


def _first(out):
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0] if isinstance(out, (list, tuple)) else out


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
