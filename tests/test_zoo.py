"""The whole zoo: every registered model trains through the instrumented step and is recorded;
Inception's auxiliary heads add their loss terms; the deep linear chain is what it says."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.models import MODELS
from zoo.records.recorder import Recorder
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec
from conftest import make_step as _make_step
from zoo.tracking.memory import MemorySink

# The smallest data of each kind a model can take, and small shapes for the big families.
SMALL_DATA = {"flat": ("digits", {}), "image": ("digits", {"layout": "image"}),
              "sequence": ("adding", {"length": 6, "n_train": 32, "n_val": 16})}
SMALL_KNOBS = {"resnet": {"depth": 8, "width": 4}, "inception": {"depth": 3, "width": 4, "aux_heads": 2}}


def make_step(model, x, y, task):
    return _make_step(model, x, y, task, optimizer="adam")


@pytest.mark.parametrize("name", [e.name for e in MODELS if "input_kind" in e.tags])  # custom: test_custom_model
def test_every_registered_model_trains_two_steps_and_is_recorded(name):
    keras.utils.set_random_seed(0)  # small nets: an unlucky draw could leave a dead ReLU filter
    data_name, options = SMALL_DATA[MODELS.get(name).tags["input_kind"]]
    data = zoo.load_dataset(data_name, **options)
    model = zoo.build_model(name, data.input_shape, data.num_outputs,
                            **SMALL_KNOBS.get(name, {"depth": 2, "width": 8}))
    x, y = tf.constant(data.x_train[:16]), tf.constant(data.y_train[:16])
    step = make_step(model, x, y, data.task)
    sink = MemorySink()
    recorder = Recorder(step.meter, sink, log_every=1)
    before = [v.numpy().copy() for v in model.trainable_variables]
    packed, probed = step.train_with_probes(x, y)
    assert recorder.on_step(packed.numpy(), probed.numpy())
    assert recorder.on_step(step.train(x, y).numpy())
    stats = recorder.stats()
    stats.check()  # shapes and dtypes as the raw file documents them
    layers = step.kernels
    assert len(layers) >= 2 and layers[-1] == "head"
    assert stats.grad_norm.shape == (2, len(layers)) and np.all(stats.grad_norm > 0)
    assert stats.hist_counts.shape[:2] == (1, len(layers))
    for layer in layers:
        assert [s for s, _ in sink.metrics[f"log10_grad_norm/{layer}"]] == [1, 2]
    assert all(np.any(v.numpy() != b) for v, b in zip(model.trainable_variables, before))


def inception_with_two_aux_heads(weight=0.3):
    keras.utils.set_random_seed(0)
    return zoo.build_model("inception", (8, 8, 1), 10, depth=3, width=2, aux_heads=2, aux_weight=weight)


def test_auxiliary_heads_add_their_weighted_loss_terms():
    data = zoo.load_dataset("digits", layout="image")
    x, y = tf.constant(data.x_train[:32]), tf.constant(data.y_train[:32])
    model = inception_with_two_aux_heads(0.3)
    assert [t._keras_history.operation.name for t in model.outputs] == ["head", "aux1_head", "aux2_head"]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    stem = model.get_layer("stem_conv").kernel
    with tf.GradientTape(persistent=True) as tape:
        main, aux1, aux2 = model(x, training=True)
        losses = [ce(y, main), ce(y, aux1), ce(y, aux2)]
        objective = losses[0] + 0.3 * (losses[1] + losses[2])
    expected = float(tf.norm(tape.gradient(objective, stem)))
    main_only = float(tf.norm(tape.gradient(losses[0], stem)))
    step = make_step(model, x, y, "classification")
    assert step.aux_heads == ("aux1_head", "aux2_head")
    assert not [k for k in step.kernels if k.startswith("aux")]  # monitored: the main path
    u = step.layout.unpack(step.train(x, y).numpy())
    np.testing.assert_allclose(u["loss"][0], float(losses[0]), rtol=1e-5)
    np.testing.assert_allclose(u["aux_loss"][0], [float(losses[1]), float(losses[2])], rtol=1e-5)
    got = u["grad_norm"][0, step.kernels.index("stem_conv")]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert abs(expected - main_only) > 1e-3 * main_only  # the auxiliary terms do reach the stem


def test_evaluation_and_inference_use_the_main_head_only():
    data = zoo.load_dataset("digits", layout="image")
    x, y = tf.constant(data.x_val[:64]), tf.constant(data.y_val[:64])
    model = inception_with_two_aux_heads()
    step = make_step(model, x, y, "classification")
    loss, _ = step.evaluate(x, y)
    main = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x)[0])
    np.testing.assert_allclose(float(loss), float(main), rtol=1e-5)
    assert step.main.outputs[0] is model.outputs[0] and len(step.main.outputs) == 1


def test_inception_run_logs_auxiliary_losses_apart():
    sink = MemorySink()
    result = zoo.train(["model=inception", "model.depth=3", "model.width=2", "model.aux_heads=2",
                        "data.layout=image", "trainer.epochs=1", "tracking.uri=null"], sink)
    for head in ("aux1_head", "aux2_head"):
        assert len(sink.metrics[f"aux_loss/{head}"]) >= 1
    assert result.stats.aux_loss.shape == (len(result.stats.step), 2)
    assert list(result.stats.aux_heads) == ["aux1_head", "aux2_head"]
    assert "final/val_accuracy" in result.final


def test_inception_config_errors():
    with pytest.raises(SpecError, match="model.aux_heads must be 0, 1 or 2, got 3"):
        compose_spec(["model=inception", "model.aux_heads=3", "data.layout=image"])
    with pytest.raises(SpecError, match=r"model.aux_heads: 2 auxiliary heads need more modules than "
                                        r"depth=2 \(at least 6\)"):
        compose_spec(["model=inception", "model.depth=2", "model.aux_heads=2", "data.layout=image"])
    with pytest.raises(SpecError, match=r"model 'inception' takes image inputs .* digits \(data.layout=image\)"):
        compose_spec(["model=inception"])


def test_sequence_head_must_match_the_dataset_targets():
    with pytest.raises(SpecError, match="model.head: dataset 'adding' has one target per sequence; "
                                        "use model.head=last, got sequence"):
        compose_spec(["model=lstm", "model.head=sequence", "data=adding"])
    with pytest.raises(SpecError, match="dataset 'copy_memory' has one target per time step; "
                                        "use model.head=sequence"):
        compose_spec(["model=gru", "data=copy_memory"])


def test_deep_linear_chain_is_bias_free_and_linear():
    model = zoo.build_model("deep_linear", (6,), 3, depth=4, width=5, init="identity")
    assert [v.path for v in model.trainable_variables] == [
        "block01_dense/kernel", "block02_dense/kernel", "block03_dense/kernel", "head/kernel"]
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    product = np.linalg.multi_dot([v.numpy() for v in model.trainable_variables])
    np.testing.assert_allclose(model(x).numpy(), x @ product, rtol=1e-5, atol=1e-6)


def test_public_functions_survive_the_import_of_the_cli_and_comparison_modules():
    """``zoo.train`` is the function even after the CLI module ``zoo.cli.train`` was imported (a
    test, a joblib worker, ``python -m zoo.cli.train``), and so is ``zoo.compare`` after
    ``zoo.analysis.comparison``: no submodule is named like a public function, so ``zoo`` is a plain
    module (no class that refuses the submodules' attributes)."""
    import importlib
    import types
    from pathlib import Path

    cli = importlib.import_module("zoo.cli.train")
    importlib.import_module("zoo.analysis.comparison")
    assert callable(zoo.train) and zoo.train.__module__ == "zoo" and hasattr(cli, "main")
    assert zoo.compare.__module__ == "zoo"
    assert type(zoo) is types.ModuleType
    package = Path(zoo.__file__).parent
    assert not {name for name in zoo.__all__ if (package / f"{name}.py").exists() or (package / name).is_dir()}
