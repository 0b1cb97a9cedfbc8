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
the same name (zoo.config.schema.OpenSection), logged to MLflow as ``model.width`` etc. The model must
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

A custom model takes whatever the data is (no ``input_kind``). Its memory cannot be estimated
from the config, so it is estimated from the model itself once the data is loaded, by a symbolic
build that allocates nothing and is bounded in memory and time (:func:`size_by_building`), and
refused as zoo.config.budget refuses the zoo's own families. It has no layer roles: the train step
finds what to measure by looking at it, as ``zoo.GradientMonitor`` does (zoo.instruments.discover),
and names what it cannot read.
"""
from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import inspect
import logging
import math
import os
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from zoo._lazy import keras
from zoo.config.origin import from_launch_folder, launch_folder
from zoo.models import MODELS
from zoo.config.schema import OpenSection, SpecError, file_digest
from zoo.config.budget import Estimate, refuse_over, room_for_model

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
def _call(builder, parsed: Target, input_shape: tuple, num_outputs: int, knobs: dict):
    """``builder(input_shape, num_outputs, **knobs)``; what it raises (sys.exit included) as one line."""
    try:  # a knob of the wrong kind (width=abc), layers that do not take the data's rank
        return builder(input_shape, num_outputs, **knobs)
    except (Exception, SystemExit) as err:
        what = f"called sys.exit({err.code!r})" if isinstance(err, SystemExit) else \
            f"raised {type(err).__name__}: {_first_line(err)[:300]}"
        raise SpecError("target", f"{parsed}({_shape(input_shape)}, {num_outputs}"
                                  f"{''.join(f', {k}={v!r}' for k, v in knobs.items())}) {what}") from None


def _builder(target: str, knobs: dict):
    """(parsed target, the function) with its signature checked against the knobs."""
    parsed = parse_target(target)
    builder = load(parsed)
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will tell
        signature = None
    if signature is not None:
        check_call(Params.from_signature(signature), knobs, parsed, str(signature))
    return parsed, builder


# --- the memory a custom model needs, from a symbolic build -------------------------------------
TRIAL_SECONDS = 30.0  # a builder still building its model symbolically after this long is refused
TRIAL_TICK = 0.25     # how often the trial looks at the clock and at what the builder has made
log = logging.getLogger("zoo")
_unsized: dict[str, str] = {}  # target -> why its symbolic build failed, said once it is built


class _TrialOver(BaseException):
    """Raised into a builder's trial build (a BaseException: the builder's own ``except
    Exception`` must not swallow it; raised again at every tick until it is not)."""


def size_by_building(section, data, batch_size: int) -> None:
    """Refuse a custom model that cannot fit, as the zoo's own families are refused before
    TensorFlow (zoo.config.budget), once the data is loaded and before anything is allocated: the
    builder runs once inside ``keras.StatelessScope(initialize_variables=False)``, where every
    variable is created deferred (its shape known, no memory taken), so a 10**12-parameter
    model costs nothing to build. Its parameters, its layers' outputs per example (the
    activations) and its weight layers make zoo.config.budget's estimate. The trial is bounded: every
    TRIAL_TICK s it looks at what the builder has made so far and stops it once the parameters
    and weight layers alone exceed the memory left (``model.depth=100000``), or once it has run
    TRIAL_SECONDS. Nothing the trial does reaches the real build: Python's and NumPy's random
    states and Keras' layer-name counters are put back, so the weights and names are those
    of a build without it. A builder that cannot be built symbolically (it makes a variable from
    a value, which Keras cannot defer) is not sized; once built, a warning says so. Raises
    SpecError (key ``model.*``)."""
    knobs = {k: v for k, v in section.kwargs().items() if k != "target"}
    shape, outputs = tuple(data.input_shape), data.num_outputs
    floats = int(data.x_train.size + data.x_val.size)
    try:
        parsed, builder = _builder(section.target, knobs)
        sized = _trial(lambda: builder(shape, outputs, **knobs), shape, room_for_model(floats), parsed, knobs)
        if sized is None:
            return
        params, activations, layers = sized
        refuse_over(Estimate(params, activations, layers, floats, len(data.x_train)), batch_size,
                    how=f", sized by building {parsed} symbolically")
    except SpecError as err:
        raise err.within("model") from None


def _knobs_shown(knobs: dict) -> str:
    return " ".join(f"model.{k}={v}" for k, v in knobs.items()) or "its defaults"


def _trial(call, input_shape: tuple, room: int | None, parsed: Target, knobs: dict) -> tuple[int, int, int] | None:
    """(parameters, activations per example, weight layers) of the model ``call`` builds,
    built symbolically under the bounds of :func:`size_by_building`; None when it cannot be."""
    import random
    import signal
    import threading
    import time

    import numpy as np
    from keras.src.backend.common import global_state  # deferred variables: no public API lists them

    timed = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
    deadline, over, building = time.monotonic() + TRIAL_SECONDS, [], [True]

    def tick(signum, frame):
        if not building[0]:  # the build is over: nothing to stop (the timer is being disarmed)
            return
        if over:  # said once and swallowed by the builder: say it again
            raise _TrialOver()
        params, layers = _deferred(global_state)
        if room is not None and params * 16 + layers * 2 * 2**20 > room:  # zoo.config.budget's terms, no activations yet
            over.append(f"its parameters and weight layers alone outgrow the memory left while it is still "
                        f"building (at least {params:.3g} parameters in {layers} weight layers so far)")
            raise _TrialOver()
        if time.monotonic() > deadline:
            over.append(f"it was still building after {TRIAL_SECONDS:g} s (symbolically, with "
                        f"{params:.3g} parameters in {layers} weight layers so far)")
            raise _TrialOver()

    saved = (random.getstate(), np.random.get_state(), _keras_state(global_state))
    previous = signal.signal(signal.SIGALRM, tick) if timed else None
    if timed:
        signal.setitimer(signal.ITIMER_REAL, TRIAL_TICK, TRIAL_TICK)
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = call()
            if isinstance(model, keras.Model) and not model.built:  # subclassed, or Sequential without an Input
                model.build((None, *input_shape))
            params, layers = _deferred(global_state)
            sized = (params, _activations(model), layers) if isinstance(model, keras.Model) else None
        building[0] = False
    except _TrialOver:
        building[0] = False
        raise SpecError("target", f"{parsed} with {_knobs_shown(knobs)} is refused: {over[0]}; lower the "
                                  f"knobs that make it deep or wide") from None
    except (Exception, SystemExit) as err:  # the build proper says what is wrong, or builds it unsized
        building[0] = False
        _unsized[parsed.text] = f"{type(err).__name__}: {_first_line(err)[:200]}"
        sized = None
    finally:
        building[0] = False
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, previous)
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        _restore_keras_state(global_state, saved[2])
    return sized


def _deferred(global_state) -> tuple[int, int]:
    """(parameters, weight layers) of the variables created so far in the stateless scope."""
    variables = global_state.get_global_attribute("uninitialized_variables") or []
    params = sum(math.prod(v.shape) for v in variables)
    return params, len({v.path.rpartition("/")[0] for v in variables})


def _activations(model) -> int:
    """Floats per example in every layer's outputs (what the backward pass keeps), from the
    symbolic graph; a layer the graph does not show (inside a subclassed model) counts 0."""
    total, stack, seen = 0, list(model.layers), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):  # its own layers carry its outputs
            stack.extend(layer.layers)
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for node in getattr(layer, "_inbound_nodes", ()):  # private: a shared layer's every call
            for tensor in keras.tree.flatten(getattr(node, "output_tensors", ())):
                total += math.prod(d or 1 for d in tuple(tensor.shape)[1:])
    return total


def _keras_state(global_state) -> dict:
    """Keras' global state (layer-name counters, the deferred variables), copied."""
    state = dict(vars(global_state.GLOBAL_STATE_TRACKER))
    if "object_name_uids" in state:
        state["object_name_uids"] = copy.copy(state["object_name_uids"])
    state.pop("uninitialized_variables", None)
    return state


def _restore_keras_state(global_state, state: dict) -> None:
    tracker = global_state.GLOBAL_STATE_TRACKER
    for name in list(vars(tracker)):
        if name not in state:
            delattr(tracker, name)
    for name, value in state.items():
        setattr(tracker, name, value)


@MODELS.register("custom", schema=CustomConfig,
                 description="your own Keras builder: build(input_shape, num_outputs, **knobs) -> logits",
                 size_by_building=size_by_building)
def build_custom(input_shape, num_outputs, *, target, **knobs):
    try:
        parsed, builder = _builder(target, knobs)
        model = _call(builder, parsed, tuple(input_shape), num_outputs, knobs)
        check_model(model, parsed, tuple(input_shape), num_outputs)
    except SpecError as err:
        raise err.within("model") from None
    finally:
        why = _unsized.pop(str(target), None)
    if why:
        log.warning("model.target %s: its memory was not checked: it could not be built symbolically first "
                    "(%s)", target, why)
    return model


_executed: dict[tuple, object] = {}  # a file target's module, by (path, size, mtime): run once per version


def load(target: Target):
    """The target's function, importing its module (or executing its file; once per version of
    the file, so the trial build and the build share it). A module that calls ``sys.exit`` on
    import is refused like one that raises: the run must not end with its exit code."""
    try:
        if target.file is None:
            _launch_folder()
            module = importlib.import_module(target.module)
        else:
            path = from_launch_folder(target.file)
            stat = os.stat(path)
            version = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
            module = _executed.get(version)
            if module is None:
                name = "_zoo_custom_" + re.sub(r"\W", "_", target.file.stem)
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module  # as an import would: pickling and dataclasses look it up
                spec.loader.exec_module(module)
                _executed[version] = module
    except (Exception, SystemExit) as err:
        what = f"called sys.exit({err.code!r})" if isinstance(err, SystemExit) else \
            f"failed: {type(err).__name__}: {_first_line(err)}"
        raise SpecError("target", f"importing {target.module or target.file} {what}") from None
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
