"""The CIFAR ResNet and its plain twin: published size, twin parity, config checks, one real run."""
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.schema import SpecError
from zoo.spec import compose_spec
from conftest import make_step


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def conv_names(model) -> list[str]:
    return [l.name for l in model.layers if isinstance(l, keras.layers.Conv2D)]


def test_resnet20_has_the_published_parameter_count():
    """He et al. 2016, table 6: ResNet-20 on CIFAR-10 has 0.27M parameters."""
    model = zoo.build_model("resnet", (32, 32, 3), 10, depth=20)
    print(f"ResNet-20: count_params={model.count_params()} trainable={trainable_count(model)}")
    assert 260_000 <= model.count_params() <= 280_000
    assert len(conv_names(model)) == 19  # 6n+2 = 20 weight layers: 19 convs + the head
    assert model.output_shape == (None, 10)


def test_plain_twin_has_the_same_convs_and_parameters():
    residual = zoo.build_model("resnet", (32, 32, 3), 10, depth=20, residual=True, shortcut="A")
    plain = zoo.build_model("resnet", (32, 32, 3), 10, depth=20, residual=False)
    assert trainable_count(plain) == trainable_count(residual)
    assert conv_names(plain) == conv_names(residual)
    assert not [l for l in plain.layers if l.name.endswith("_add")]
    assert len([l for l in residual.layers if l.name.endswith("_add")]) == 9
    projected = zoo.build_model("resnet", (32, 32, 3), 10, depth=20, shortcut="B")
    assert trainable_count(projected) > trainable_count(residual)
    assert {"stage2_block1_shortcut", "stage3_block1_shortcut"} <= set(conv_names(projected))


def test_shortcut_a_is_subsample_and_zero_pad():
    model = zoo.build_model("resnet", (8, 8, 2), 3, depth=8, width=2)
    layer = model.get_layer("stage2_block1_shortcut")
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (1, 4, 4, 4)
    np.testing.assert_array_equal(out[..., 1:3], x[:, ::2, ::2, :])
    assert np.all(out[..., 0] == 0) and np.all(out[..., 3] == 0)


def test_depth_must_be_6n_plus_2():
    with pytest.raises(SpecError, match=r"6n\+2") as err:
        compose_spec(["model=resnet", "model.depth=21", "data.layout=image"])
    assert str(err.value).startswith("model.depth must be 6n+2")
    with pytest.raises(SpecError, match=r"6n\+2"):
        compose_spec(["model=resnet", "model.depth=2", "data.layout=image"])
    with pytest.raises(SpecError, match="model.shortcut must be one of A, B"):
        compose_spec(["model=resnet", "model.shortcut=C", "data.layout=image"])
    spec = compose_spec(["model=resnet", "model.depth=110", "data.layout=image"])
    assert spec.model.depth == 110 and spec.data.input_kind == "image"


def test_resnet_on_flat_digits_is_refused_naming_digits():
    with pytest.raises(SpecError) as err:
        compose_spec(["model=resnet", "data=digits"])
    message = str(err.value)
    assert message.startswith("data.name: model 'resnet' takes image inputs but dataset 'digits' is flat")
    assert "datasets that fit: " in message and "digits (data.layout=image)" in message
    with pytest.raises(SpecError, match="model 'mlp' takes flat inputs but dataset 'digits' is image"):
        compose_spec(["data.layout=image"])


def test_digits_image_layout():
    flat = zoo.load_dataset("digits")
    small = zoo.load_dataset("digits", layout="image")
    big = zoo.load_dataset("digits", layout="image", image_size=32)
    assert flat.input_shape == (64,) and small.input_shape == (8, 8, 1) and big.input_shape == (32, 32, 1)
    np.testing.assert_array_equal(small.x_train.reshape(len(small.x_train), 64), flat.x_train)
    np.testing.assert_array_equal(big.x_val[3, :, :, 0], np.kron(small.x_val[3, :, :, 0], np.ones((4, 4))))
    np.testing.assert_array_equal(small.y_val, flat.y_val)
    with pytest.raises(SpecError, match="data.image_size is only used with data.layout=image"):
        compose_spec(["data.image_size=32"])
    with pytest.raises(SpecError, match="data.image_size must be one of 8, 32, got 16"):
        compose_spec(["data.layout=image", "data.image_size=16"])


def test_resnet8_trains_through_the_instrumented_step():
    keras.utils.set_random_seed(0)
    data = zoo.load_dataset("digits", layout="image")
    model = zoo.build_model("resnet", data.input_shape, data.num_outputs, depth=8, width=4)
    x, y = data.x_train[:32], data.y_train[:32]
    step = make_step(model, x, y, "classification", lr=0.01)
    rows = np.stack([step.train(tf.constant(x), tf.constant(y)).numpy() for _ in range(2)])
    u = step.layout.unpack(rows)
    kernels = step.kernels
    assert kernels[0] == "stem_conv" and kernels[-1] == "head"
    assert set(conv_names(model)) <= set(kernels) and len(kernels) == len(conv_names(model)) + 1
    assert np.all(np.isfinite(u["grad_norm"])) and np.all(u["grad_norm"] > 0), u["grad_norm"]
    assert np.all(u["finite"] == 1)
    acts = [name for name, _ in step.activations]
    assert acts[0] == "stem_act" and acts[-1] == "stage3_block1_out_act" and len(acts) == 7


def test_resnet_trains_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = zoo.train(["model=resnet", "model.depth=8", "model.width=4", "data.layout=image",
                        "trainer.epochs=1"])
    assert result.outcome == "finished"
    assert result.verdict.label == "healthy", result.verdict  # ResNet-8 with batch norm
    assert "final/val_loss" in result.final


def test_model_registry_import_stays_tensorflow_free():
    code = "import zoo.models, sys; assert 'tensorflow' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]
