"""Bad inputs at the newer doors (issue 31), tried as a user would: each case runs the real command
in a fresh folder of its own, and what it did is measured: the exit code, the lines it wrote on
stderr, its last line, the seconds to fail, and whether TensorFlow was loaded by then.

The doors: ``zoo-diagnose`` (its ``.keras`` and ``.npz`` files, its options), ``zoo-train
data=arrays`` (the ``.npz`` file), ``zoo-train model=custom`` (the builder), ``zoo-ablate`` on a
study file of your own, and ``zoo-pretrained train``. A case is one *kind* of fault; where the
issue gave one value, a second value of the same kind is a case too.

    python benchmarks/bad_inputs.py [--only SUBSTRING] [--timeout SECONDS] [--markdown]

A case still running after ``--timeout`` (default 90 s) is killed and shown as a hang. Every
case should exit 2 in one line; the script exits 1 otherwise. Run it under the heavy lock
(``flock /tmp/gradzoo-heavy.lock ...``): it is 40-odd commands, most of them a second or two,
some of them the TensorFlow import; about 4 minutes on 2 idle cores.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parents[1]
ZOO_PRETRAINED_ENTRY = "mlp20-relu-digits"  # a shipped entry; its recipe is never run by a refused case
TIMEOUT = 90.0
TF_MARK = "ZOO_TF_LOADED"  # printed by the probe at exit when TensorFlow was imported


@dataclass
class Case:
    name: str                   # what is wrong, as the table says it
    argv: Callable[[Path], list[str]]  # after `python -m`, given the case's folder
    setup: Callable[[Path], None] = lambda folder: None
    python: bool = False        # argv is ["-c", code]: a Python door, not a command


@dataclass
class Outcome:
    case: str
    code: int | None
    seconds: float
    lines: int
    last: str
    tensorflow: bool
    hung: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 2 and self.lines == 1 and not self.hung


# --- fixtures ------------------------------------------------------------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(header: bytes, data: bytes = b"") -> bytes:
    """A version 1.0 ``.npy`` member whose header is ``header`` as given (padded to 64 bytes)."""
    total = 10 + len(header) + 1
    padded = header + b" " * ((64 - total % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded + data


def write_npz(path: Path, members: dict[str, bytes | np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, value in members.items():
            z.writestr(f"{name}.npy", value if isinstance(value, bytes) else npy_bytes(value))


def claimed(shape, descr="<f4") -> bytes:
    """A well-formed header claiming ``shape`` of ``descr``, followed by 64 bytes of data only."""
    return npy_with_header(repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode(), b"\0" * 64)


GARBAGE = npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (64, 8), ((((")
NOT_A_DICT = npy_with_header(b"[1, 2, 3]")
BAD_DESCR = npy_with_header(b"{'descr': '<z9', 'fortran_order': False, 'shape': (64, 8), }")
NEGATIVE = npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-64, 8), }")
BAD_MAGIC = b"\x93NUMPZ\x01\x00" + b"\0" * 120


def rng_data(n: int = 64, features: int = 8, classes: int = 3, scale: float = 1.0, dtype="float32"):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(n, features)) * scale).astype(dtype)
    y = rng.integers(0, classes, n).astype("int32")
    return x, y


def arrays_file(folder: Path, name: str = "data.npz", **replace) -> Path:
    """An ``arrays`` dataset file (x_train, y_train, x_val, y_val) with members replaced."""
    x, y = rng_data()
    members = {"x_train": x, "y_train": y, "x_val": x[:16], "y_val": y[:16], **replace}
    write_npz(folder / name, members)
    return folder / name


def diag_file(folder: Path, name: str = "data.npz", **replace) -> Path:
    x, y = rng_data()
    write_npz(folder / name, {"x": x, "y": y, **replace})
    return folder / name


_MODELS: dict[str, bytes] = {}
MODEL_CODE = {  # saved as a user would: compiled, with its loss
    "tanh": "keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation='tanh'), keras.layers.Dense(3)]); "
            "m.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer='sgd')",
    "relu": "keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation='relu'), keras.layers.Dense(1)]); "
            "m.compile(loss='mse', optimizer='sgd')",
}


def model_bytes(kind: str = "tanh") -> bytes:
    """A tiny model's ``.keras`` file: "tanh" (8 -> 16 tanh -> 3 logits, a classifier) or "relu"
    (8 -> 16 ReLU -> 1, mean squared error); made once each, in a process of its own."""
    if kind not in _MODELS:
        code = f"import keras, sys\nm = {MODEL_CODE[kind]}\nm.save(sys.argv[1])\n"
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-c", code, f"{tmp}/m.keras"], check=True, env=_env(),
                           capture_output=True)
            _MODELS[kind] = Path(f"{tmp}/m.keras").read_bytes()
    return _MODELS[kind]


def model_file(folder: Path, name: str = "model.keras", kind: str = "tanh") -> Path:
    (folder / name).write_bytes(model_bytes(kind))
    return folder / name


def keras_with(folder: Path, config, weights: bool = True, name: str = "model.keras") -> Path:
    """A ``.keras`` zip with ``config`` (bytes, or JSON of an object) and maybe the weights."""
    with zipfile.ZipFile(io.BytesIO(model_bytes())) as z:
        h5 = z.read("model.weights.h5")
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("config.json", config if isinstance(config, bytes) else json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3"}))
        if weights:
            z.writestr("model.weights.h5", h5)
    return folder / name


def config_of_model() -> dict:
    with zipfile.ZipFile(io.BytesIO(model_bytes())) as z:
        return json.loads(z.read("config.json"))


def diagnose(*args: str, model: str = "model.keras", data: str = "data.npz") -> Callable[[Path], list[str]]:
    return lambda folder: ["zoo.cli.diagnose", model, "--data", data, "--out", str(folder / "out"), *args]


def both(*steps):
    def run(folder):
        for step in steps:
            step(folder)
    return run


CUSTOM = '''import keras
def build(input_shape, num_outputs, depth=2, width=16):
    x = inputs = keras.Input(input_shape)
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))
'''


def custom_file(source: str, name: str = "net.py"):
    return lambda folder: (folder / name).write_text(source)


def train(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda folder: ["zoo.cli.train", "tracking.uri=null", f"hydra.run.dir={folder}/outputs", *overrides]


def study_file(body: str, name: str = "mine.yaml"):
    return lambda folder: (folder / name).write_text(body)


STUDY = """defaults: [config, _self_]
hydra:
  searchpath: [pkg://zoo.conf]
  sweeper:
    params:
      model.activation: relu,tanh
      seed: 0,1,2
study:
  name: {name}
  description: mine
  variant_keys: [model.activation]
  metrics: {metrics}
  claim: {{text: relu beats tanh, checks: [{{metric: final/val_accuracy, variant: {{model.activation: relu}}, op: ">", than: {{model.activation: tanh}}}}]}}
model: {{depth: 2, width: 8}}
trainer: {{epochs: 1}}
tracking: {{uri: null}}
"""


def alias_bomb(levels: int = 12) -> str:
    """A YAML 'billion laughs': each level lists the one before ten times (10**levels leaves)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "defaults: [config, _self_]\n" + "\n".join(lines) + "\nstudy: {name: x}\n"


PYTHON_PRELUDE = """import sys, numpy as np, zoo, keras
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
x = np.random.default_rng(0).normal(size=(64, 8)).astype('float32'); y = (x[:, 0] > 0).astype('int32')
try:
"""
# what a user's script catching the documented type does: its message as one line, exit 2 (before
# zoo.InputError existed, nothing is caught: the traceback is what the user saw)
PYTHON_CATCH = """
except getattr(zoo, 'InputError', ()) as err:
    sys.stderr.write(f'{type(err).__name__}: {err}\\n')
    sys.exit(2)
"""


def py(code: str) -> Callable[[Path], list[str]]:
    body = "".join(f"    {line}\n" for line in code.splitlines())
    return lambda folder: ["-c", PYTHON_PRELUDE + body + PYTHON_CATCH]


def cases() -> list[Case]:
    data = lambda f: diag_file(f)  # noqa: E731
    model = lambda f: model_file(f)  # noqa: E731
    files = both(model, data)
    return [
        # --- zoo-diagnose: the .npz -----------------------------------------------------------
        Case("zoo-diagnose: an .npz member whose .npy header is garbage", diagnose(),
             both(model, lambda f: diag_file(f, x=GARBAGE))),
        Case("zoo-diagnose: an .npy header that is not a dict", diagnose(), both(model, lambda f: diag_file(f, x=NOT_A_DICT))),
        Case("zoo-diagnose: an .npy header with an unknown dtype", diagnose(), both(model, lambda f: diag_file(f, x=BAD_DESCR))),
        Case("zoo-diagnose: an .npy header with a negative shape", diagnose(), both(model, lambda f: diag_file(f, x=NEGATIVE))),
        Case("zoo-diagnose: an .npy member with a bad magic string", diagnose(), both(model, lambda f: diag_file(f, x=BAD_MAGIC))),
        Case("zoo-diagnose: an .npy header claiming 1e11 rows (64 bytes of data)", diagnose(),
             both(model, lambda f: diag_file(f, x=claimed((10**11, 8))))),
        Case("zoo-diagnose: an .npy header claiming 1e6 rows it does not hold", diagnose(),
             both(model, lambda f: diag_file(f, x=claimed((10**6, 8))))),
        Case("zoo-diagnose: x of magnitude 1e30 (float32) into a ReLU regression net (its squared error overflows)",
             diagnose(), both(lambda f: model_file(f, kind="relu"),
                              lambda f: diag_file(f, x=rng_data(scale=1e30)[0], y=rng_data(scale=1e30)[0][:, 0]))),
        Case("zoo-diagnose: x of magnitude 1e300 (float64, beyond float32)", diagnose(),
             both(model, lambda f: diag_file(f, x=rng_data(scale=1e300, dtype="float64")[0]))),
        Case("zoo-diagnose: a single example", diagnose(),
             both(model, lambda f: diag_file(f, x=rng_data()[0][:1], y=rng_data()[1][:1]))),
        # --- zoo-diagnose: the .keras file -------------------------------------------------------
        Case("zoo-diagnose: a .keras zip whose config.json is not JSON", diagnose(), both(data, lambda f: keras_with(f, b"{oops"))),
        Case("zoo-diagnose: a .keras zip whose config.json is a list", diagnose(), both(data, lambda f: keras_with(f, [1, 2]))),
        Case("zoo-diagnose: a .keras zip whose layers are not objects", diagnose(),
             both(data, lambda f: keras_with(f, {"class_name": "Sequential", "config": {"layers": [1, "x"]}}))),
        Case("zoo-diagnose: a .keras zip without its weights", diagnose(),
             both(data, lambda f: keras_with(f, config_of_model(), weights=False))),
        Case("zoo-diagnose: a .keras file cut in half", diagnose(),
             both(data, lambda f: (f / "model.keras").write_bytes(model_bytes()[:len(model_bytes()) // 2]))),
        Case("zoo-diagnose: --model a folder", diagnose(model="."), data),
        # --- zoo-diagnose: its options -----------------------------------------------------------
        Case("zoo-diagnose: --seed -1", diagnose("--seed", "-1"), files),
        Case("zoo-diagnose: --seed 2**40", diagnose("--seed", str(2**40)), files),
        Case("zoo-diagnose: --out under /proc", lambda f: ["zoo.cli.diagnose", "model.keras", "--data", "data.npz",
                                                          "--out", "/proc/zoo-out"], files),
        Case("zoo-diagnose: --out under /sys", lambda f: ["zoo.cli.diagnose", "model.keras", "--data", "data.npz",
                                                         "--out", "/sys/zoo-out"], files),
        Case("zoo-diagnose: --out a file", lambda f: ["zoo.cli.diagnose", "model.keras", "--data", "data.npz",
                                                     "--out", "data.npz"], files),
        Case("zoo-diagnose --mlflow --tracking-uri http://127.0.0.1:1", diagnose("--mlflow", "--tracking-uri",
                                                                                "http://127.0.0.1:1"), files),
        # --- zoo-train data=arrays -----------------------------------------------------------------
        Case("data=arrays: a member whose .npy header is garbage", train("data=arrays", "data.path=data.npz"),
             lambda f: arrays_file(f, x_train=GARBAGE)),
        Case("data=arrays: an .npy header that is not a dict", train("data=arrays", "data.path=data.npz"),
             lambda f: arrays_file(f, y_val=NOT_A_DICT)),
        Case("data=arrays: an .npy header claiming 1e11 rows", train("data=arrays", "data.path=data.npz"),
             lambda f: arrays_file(f, x_train=claimed((10**11, 8)), y_train=claimed((10**11,), "<i4"))),
        Case("data=arrays: an .npy header claiming 1e6 rows it does not hold", train("data=arrays", "data.path=data.npz"),
             lambda f: arrays_file(f, x_train=claimed((10**6, 8)), y_train=claimed((10**6,), "<i4"))),
        Case("data=arrays: x of magnitude 1e300 (float64, beyond float32)", train("data=arrays", "data.path=data.npz",
                                                                                 "data.standardize=false"),
             lambda f: arrays_file(f, x_train=rng_data(scale=1e300, dtype="float64")[0])),
        Case("data=arrays: a single training example (standardized)", train("data=arrays", "data.path=data.npz"),
             lambda f: arrays_file(f, x_train=rng_data()[0][:1], y_train=np.full(1, 0.5, "float32"),
                                   y_val=np.linspace(0, 1, 16).astype("float32"))),
        # --- zoo-train model=custom ----------------------------------------------------------------
        Case("model=custom model.depth=100000", train("model=custom", "model.target=net.py:build", "model.depth=100000"),
             custom_file(CUSTOM)),
        Case("model=custom model.width=1000000", train("model=custom", "model.target=net.py:build", "model.width=1000000"),
             custom_file(CUSTOM)),
        Case("model=custom: a builder that never returns", train("model=custom", "model.target=net.py:build"),
             custom_file("import time\ndef build(input_shape, num_outputs):\n    while True:\n        time.sleep(0.1)\n")),
        Case("model=custom: a target file that calls sys.exit(0) on import", train("model=custom", "model.target=net.py:build"),
             custom_file("import sys\nsys.exit(0)\ndef build(input_shape, num_outputs):\n    pass\n")),
        Case("model=custom: a builder that calls sys.exit(0)", train("model=custom", "model.target=net.py:build"),
             custom_file("import sys\ndef build(input_shape, num_outputs):\n    sys.exit(0)\n")),
        # --- zoo-ablate on a study file of your own --------------------------------------------------
        Case("zoo-ablate: a study file that is a YAML alias bomb", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file(alias_bomb())),
        Case("zoo-ablate: a study file of 64 MiB", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file("# " + "x" * (64 * 2**20) + "\n" + STUDY.format(name="mine", metrics="[final/val_accuracy]"))),
        Case("zoo-ablate: a study with an empty study.name", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file(STUDY.format(name="''", metrics="[final/val_accuracy]"))),
        Case("zoo-ablate: a study with no metrics", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file(STUDY.format(name="mine", metrics="[]"))),
        Case("zoo-ablate: a study whose metrics is a string", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file(STUDY.format(name="mine", metrics="final/val_accuracy"))),
        Case("zoo-ablate: a study whose name is a number", lambda f: ["zoo.cli.ablate", "mine.yaml", "--scale", "quick"],
             study_file(STUDY.format(name="12", metrics="[final/val_accuracy]"))),
        # --- zoo-pretrained ------------------------------------------------------------------------------
        Case("zoo-pretrained train --register against http://127.0.0.1:1",
             lambda f: ["zoo.cli.pretrained", "train", ZOO_PRETRAINED_ENTRY, "--register", "--tracking-uri", "http://127.0.0.1:1"]),
        Case("zoo-pretrained train --register --tracking-uri sqlite:////proc/x.db",
             lambda f: ["zoo.cli.pretrained", "train", ZOO_PRETRAINED_ENTRY, "--register", "--tracking-uri", "sqlite:////proc/x.db"]),
        Case("zoo-pretrained train --threads -1", lambda f: ["zoo.cli.pretrained", "train", ZOO_PRETRAINED_ENTRY, "--threads", "-1"]),
        # --- the Python doors ------------------------------------------------------------------------------
        Case("zoo.diagnose(m, (x,))", py("zoo.diagnose(m, (x,))"), python=True),
        Case("zoo.diagnose(m, {'x': x})", py("zoo.diagnose(m, {'x': x})"), python=True),
        Case("zoo.diagnose(m, (x, y), batches=0)", py("zoo.diagnose(m, (x, y), batches=0)"), python=True),
        Case("zoo.diagnose(m, (x, y), batch_size=0)", py("zoo.diagnose(m, (x, y), batch_size=0)"), python=True),
        Case("zoo.diagnose(m, (x, y), seed=-1)", py("zoo.diagnose(m, (x, y), seed=-1)"), python=True),
        Case("zoo.diagnose(m, (x[:, :5], y))", py("zoo.diagnose(m, (x[:, :5], y))"), python=True),
        Case("zoo.diagnose('model.keras', (x, y))", py("zoo.diagnose('model.keras', (x, y))"), python=True),
        Case("zoo.compare of models with different input shapes",
             py("n = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])\nzoo.compare(m, n, (x, y, 'classification'))"),
             python=True),
        Case("zoo.compare(m, m, (x, y))", py("zoo.compare(m, m, (x, y))"), python=True),
        Case("zoo.build_model('mlp', (8,), 0)", py("zoo.build_model('mlp', (8,), 0)"), python=True),
        Case("zoo.build_model('mlp', 8, 3)", py("zoo.build_model('mlp', 8, 3)"), python=True),
        Case("zoo.train('model.depth=3')", py("zoo.train('model.depth=3')"), python=True),
        Case("zoo.load_pretrained(3)", py("zoo.load_pretrained(3)"), python=True),
    ]


# --- running ---------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path or str(HERE), "TF_CPP_MIN_LOG_LEVEL": "2"}


PROBE = ("import atexit, os, sys, runpy\n"
         "atexit.register(lambda: os.write(2, ('\\n" + TF_MARK + "' if 'tensorflow' in sys.modules else '').encode()))\n"
         "sys.argv = sys.argv[1:]\n"
         "if sys.argv[0] == '-c':\n    sys.argv = ['-c']\n    exec(compile(CODE, '<string>', 'exec'), {'__name__': '__main__'})\n"
         "else:\n    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def run_case(case: Case, timeout: float = TIMEOUT) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="zoo-bad-") as tmp:
        folder = Path(tmp)
        case.setup(folder)
        argv = case.argv(folder)
        code = PROBE.replace("CODE", repr(argv[1]) if argv[0] == "-c" else "''")
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=folder, env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            hung = True
        seconds = time.monotonic() - started
    tf = TF_MARK in err
    lines = [line for line in err.replace(TF_MARK, "").splitlines() if line.strip() and not _tensorflow_noise(line)]
    last = lines[-1] if lines else (out.strip().splitlines() or [""])[-1]
    return Outcome(case.name, None if hung else proc.returncode, seconds, len(lines), last[:300], tf, hung)


NOISE = ("oneDNN custom operations", "All log messages before absl::InitializeLog", "Could not find cuda drivers",
         "failed call to cuInit", "cpu_feature_guard", "WARNING: All log messages", "E0000 00:00", "W0000 00:00",
         "I0000 00:00", "To enable the following instructions", "rebuild TensorFlow with")


def _tensorflow_noise(line: str) -> bool:
    """TensorFlow's start-up lines that no setting hides (zoo._lazy.pin_backend): not the command's."""
    return any(n in line for n in NOISE)


def describe(o: Outcome) -> str:
    if o.hung:
        return f"still running after {o.seconds:.0f} s"
    return f"exit {o.code}, {o.lines} line{'s' * (o.lines != 1)}{', after TensorFlow' if o.tensorflow else ''}: {o.last}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="run the cases whose name holds this")
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    parser.add_argument("--markdown", action="store_true", help="print the table rows at the end")
    args = parser.parse_args(argv)
    outcomes = []
    for case in cases():
        if args.only and args.only not in case.name:
            continue
        o = run_case(case, args.timeout)
        outcomes.append(o)
        print(f"{'ok ' if o.ok else 'BAD'} {o.seconds:6.2f} s  {o.case}: {describe(o)}", flush=True)
    if args.markdown:
        print("\n| input | now | seconds |\n|---|---|---:|")
        for o in outcomes:
            print(f"| {o.case} | {describe(o)} | {o.seconds:.2f} |")
    bad = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} cases refused in one line with exit 2")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
