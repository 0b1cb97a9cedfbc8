"""What an instrument is: one file that declares what it measures on probe steps and computes it.

An instrument runs on probe steps (every ``histogram_every``-th: zoo.instruments.meter) inside the
compiled step, for every client (the zoo's loop, GradientMonitor, zoo.compare / zoo.diagnose).
Its class declares, as data, everything the host side needs, so that the raw statistics file
(zoo.records.stats.RunStats), the recorder's MLflow readings (zoo.records.recorder) and the
names a study may compare (zoo.studies.metrics) follow from it with no edit elsewhere:

- ``key``, ``axes``, ``dims``, ``kind``, ``doc``: its raw array ``key`` [H, *axes] (H: the probe
  steps), each axis letter's meaning and length (the length of a labels array, a number, or
  free), and what it holds;
- ``labels``: the array naming its first axis (``act_layers``), and ``context()``: any other
  fixed array (``hist_edges``);
- ``mlflow``: the MLflow names (patterns) its :meth:`epoch_metrics` log at an epoch's end from
  the latest probe step, and ``summary_names``: the ``summary/*`` numbers :meth:`summarize`
  gives a run;
- :meth:`applies`: whether (and how) it measures a given model; :meth:`compute`: its fields on
  one probe step, in the graph.

Subclassing registers it (:data:`REGISTRY`, in import order). Declarations import neither
TensorFlow nor Keras (the raw file and study validation read them before TensorFlow loads);
``applies`` and ``compute`` import them when they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.instruments.layout import Field


@dataclass(frozen=True)
class Array:
    """One array of the raw statistics file: its axes (letters of zoo.records.stats.DIMENSIONS;
    "B+1": histogram bin edges), its kind ("float", "int", "bool" or "text") and what it holds."""
    name: str
    axes: tuple[str, ...]
    kind: str
    doc: str


@dataclass
class Probe:
    """What an instrument gets on a probe step: the batch's inputs, the tapped tensors of the
    forward pass by name, the gradient of the data objective w.r.t. its ``wrt`` tensors, the
    per-kernel gradients of the data objective, and the batch's targets (GradientMonitor in fit)."""
    x: object
    taps: dict
    wrt_grads: list
    kernel_grads: list = field(default_factory=list)
    y: object = None


@dataclass
class ModelView:
    """A model as the instruments see it when deciding whether they apply: its main path (a
    functional keras.Model), its activation layers with their registry kinds, its monitored
    kernels' names, the sequences its builder declared, and where to name what cannot be
    measured (``skipped``: what -> why)."""
    main: object
    activations: list
    kernels: tuple[str, ...]
    sequences: tuple = ()
    skipped: dict = field(default_factory=dict)


REGISTRY: list[type] = []  # every instrument class, in import order: the raw file's order too


class Instrument:
    key: str = ""                    # the probe field and its raw array
    axes: tuple[str, ...] = ()       # the raw array's axes after H
    dims: dict[str, str] = {}        # axis letter -> what it counts
    sizes: dict[str, object] = {}    # axis letter -> its length: a labels array's name, a number, or None (free)
    kind: str = "float"
    doc: str = ""
    labels: tuple[str, str] | None = None  # (array naming the first axis, what it holds)
    mlflow: tuple[str, ...] = ()      # MLflow names (patterns) of its epoch readings
    summary_names: tuple[str, ...] = ()   # the summary/* numbers of summarize()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.key:
            REGISTRY.append(cls)

    # -- what it is, for a given model -----------------------------------------------------------
    def __init__(self, labels: tuple[str, ...] = (), shape: tuple[int, ...] = ()):
        self.names, self.shape = tuple(labels), tuple(shape)

    @property
    def fields(self) -> tuple[Field, ...]:
        """Its fields in the probe step's packed row (zoo.instruments.layout)."""
        return (Field(self.key, self.shape, self.names),)

    @classmethod
    def applies(cls, view: ModelView) -> "Instrument | None":
        """This instrument for the model ``view`` shows, or None where it does not apply (what it
        cannot measure on a layer goes in ``view.skipped``)."""
        return None

    def taps(self) -> dict:
        """Tensors of the forward pass it reads, by name (symbolic)."""
        return {}

    def wrt(self, x, taps) -> list:
        """Tensors whose gradient it needs."""
        return []

    def compute(self, probe: Probe) -> dict:
        """Its fields on one probe step, in the graph."""
        raise NotImplementedError

    # -- the host side (numpy only) -----------------------------------------------------------
    @classmethod
    def arrays(cls) -> tuple[Array, ...]:
        """Its arrays in the raw statistics file: the labels, the context, its readings."""
        out = [Array(cls.labels[0], cls.axes[:1], "text", cls.labels[1])] if cls.labels else []
        out += list(cls.context_arrays())
        return (*out, Array(cls.key, ("H", *cls.axes), cls.kind, cls.doc))

    @classmethod
    def context_arrays(cls) -> tuple[Array, ...]:
        """Fixed arrays beside its readings (none by default)."""
        return ()

    def context(self) -> dict[str, np.ndarray]:
        """The values of :meth:`context_arrays` for this model."""
        return {}

    def raw(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Its raw arrays from its readings ``values`` [H, *shape]."""
        out = {self.labels[0]: np.array(self.names, dtype=str)} if self.labels else {}
        out.update(self.context())
        out[self.key] = values.astype(np.int64 if self.kind == "int" else np.float64)
        return out

    @classmethod
    def empty(cls, probes: int) -> dict[str, np.ndarray]:
        """Its raw arrays for a run it did not measure: no labels, no readings (a fixed axis
        keeps its length, the others are 0)."""
        absent = cls.__new__(cls)
        Instrument.__init__(absent, (), tuple(cls.sizes[a] if isinstance(cls.sizes.get(a), int) else 0
                                              for a in cls.axes))
        return absent.raw(np.zeros((probes, *absent.shape)))

    def epoch_metrics(self, latest: np.ndarray) -> dict[str, float]:
        """MLflow points at an epoch's end from the latest probe step's readings."""
        return {}

    @staticmethod
    def summarize(stats) -> dict[str, float]:
        """The ``summary/*`` numbers of a run (zoo.records.stats.RunStats) this instrument gives."""
        return {}
