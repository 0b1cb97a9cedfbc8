"""An instrument is one file (issue 32): a new instrument, written as one module and imported,
is measured on probe steps and lands in the raw statistics file, in MLflow (a sink's metrics at
each epoch's end) and in the names a study may compare, with no edit anywhere else."""
import importlib.util
import sys
import textwrap

import numpy as np
import pytest

import zoo
from zoo.instruments import REGISTRY
from zoo.records.stats import RunStats
from zoo.studies import metrics
from zoo.tracking.memory import MemorySink

NEW_INSTRUMENT = textwrap.dedent('''
    """The largest |gradient element| of each monitored kernel, on probe steps."""
    from zoo.instruments.base import Instrument


    class LargestGradient(Instrument):
        key = "largest_grad"
        axes = ("L",)
        doc = "the largest |element| of each monitored kernel's gradient"
        mlflow = ("largest_grad/*",)
        summary_names = ("summary/largest_grad_init",)

        def __init__(self, kernels=()):
            super().__init__(kernels, (len(kernels),))

        @classmethod
        def applies(cls, view):
            return cls(view.kernels)

        def compute(self, probe):
            import tensorflow as tf
            return {"largest_grad": tf.stack([tf.reduce_max(tf.abs(tf.convert_to_tensor(g))) for g in probe.kernel_grads])}

        def epoch_metrics(self, latest):
            return {f"largest_grad/{name}": float(v) for name, v in zip(self.names, latest)}

        @staticmethod
        def summarize(stats):
            return {"summary/largest_grad_init": float(stats.largest_grad[0].max())} if stats.largest_grad.size else {}
''')


@pytest.fixture
def new_instrument(tmp_path):
    path = tmp_path / "largest_gradient.py"
    path.write_text(NEW_INSTRUMENT)
    spec = importlib.util.spec_from_file_location("largest_gradient", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["largest_gradient"] = module
    spec.loader.exec_module(module)  # registers it
    yield module.LargestGradient
    REGISTRY.remove(module.LargestGradient)
    del sys.modules["largest_gradient"]


def test_a_new_instrument_in_one_file_reaches_the_raw_file_mlflow_and_studies(new_instrument, tmp_path):
    assert metrics.is_logged("largest_grad/block01_dense") and metrics.is_logged("summary/largest_grad_init")
    sink = MemorySink()
    result = zoo.train(["model.depth=3", "model.width=8", "trainer.epochs=2", "monitor.histogram_every=5",
                        "data=synthetic", "data.n_train=128", "data.n_val=32"], sink=sink)
    stats = result.stats
    # the raw file: its array, one row per probe step, a value per kernel, saved and read back
    assert stats.largest_grad.shape == (len(stats.hist_step), len(stats.layers)) and np.all(stats.largest_grad > 0)
    stats.save(tmp_path / "stats.npz")
    again = RunStats.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(again.largest_grad, stats.largest_grad)
    # MLflow: its epoch readings, and its summary number among the run's final metrics
    logged = {k for k in sink.metrics}
    assert {f"largest_grad/{layer}" for layer in stats.layers} <= logged
    assert "summary/largest_grad_init" in logged
    # a second way: the largest element of a gradient is at most its norm and at least its norm
    # over the square root of its size
    first = stats.hist_step[0] - 1
    sizes = np.array([np.prod(v.shape) for v in result.model.trainable_variables if v.path.endswith("kernel")])
    assert np.all(stats.largest_grad[0] <= stats.grad_norm[first] * (1 + 1e-6))
    assert np.all(stats.largest_grad[0] >= stats.grad_norm[first] / np.sqrt(sizes) * (1 - 1e-6))


def test_without_it_the_same_files_hold_nothing_of_it(new_instrument):
    REGISTRY.remove(new_instrument)
    try:
        assert not metrics.is_logged("largest_grad/block01_dense")
        result = zoo.train(["model.depth=2", "model.width=4", "trainer.epochs=1", "data=synthetic",
                            "data.n_train=64", "data.n_val=32"], sink=MemorySink())
        assert not hasattr(result.stats, "largest_grad")
    finally:
        REGISTRY.append(new_instrument)
