"""The CIFAR ResNet and its plain twin: published size, twin parity, config checks, one real run."""
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec
from conftest import EVENT_SECONDS, make_step


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]


# --- residual_scale: one (the paper's block), skipinit (De & Smith 2020), fixup (Zhang et al. 2019)
TODAYS_DEPTH8 = [  # model.residual_scale=one: every layer's name as before the key existed
    "inputs", "stem_conv", "stem_norm", "stem_act",
    "stage1_block1_conv1", "stage1_block1_norm1", "stage1_block1_conv1_act", "stage1_block1_conv2",
    "stage1_block1_norm2", "stage1_block1_add", "stage1_block1_out_act",
    *[f"stage{s}_block1_{part}" for s in (2, 3) for part in
      ("conv1", "norm1", "conv1_act", "conv2", "norm2", "shortcut", "add", "out_act")],
    "pool", "head"]


def resnet(depth=8, width=4, shape=(8, 8, 1), seed=0, **knobs):
    keras.utils.set_random_seed(seed)
    return zoo.build_model("resnet", shape, 10, depth=depth, width=width, **knobs)


def test_residual_scale_one_is_todays_model():
    model = resnet()
    assert sorted(l.name for l in model.layers) == sorted(TODAYS_DEPTH8)
    explicit = resnet(residual_scale="one")
    for a, b in zip(model.weights, explicit.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_parameter_counts_by_hand_for_depth_8():
    """Depth 8 (n = 1), width 4, 8x8x1 inputs, 10 classes; a 3x3 conv from c to f has 9cf weights."""
    convs = [9 * 1 * 4, 9 * 4 * 4, 9 * 4 * 4,  # stem; stage 1: conv1, conv2 (4 -> 4)
             9 * 4 * 8, 9 * 8 * 8,              # stage 2: 4 -> 8 (option-A shortcut: no weights)
             9 * 8 * 16, 9 * 16 * 16]           # stage 3: 8 -> 16
    channels = [4, 4, 4, 8, 8, 16, 16]          # each conv's filters: one bias or norm per channel
    head = 16 * 10 + 10
    kernels = sum(convs)                        # 4,644
    assert kernels == 4644
    counts = {
        ("none", "one"): kernels + sum(channels) + head,            # conv biases: 4,874
        ("none", "skipinit"): kernels + sum(channels) + head + 3,   # + one alpha per block
        ("none", "fixup"): kernels + head + 2 + 3 * 5,              # no conv biases; stem and pool
        # biases; per block bias1a, bias1b, bias2a, bias2b and the multiplier: 4,831
        ("batch", "one"): kernels + 2 * sum(channels) + head,       # gamma and beta: 4,934
        ("batch", "skipinit"): kernels + 2 * sum(channels) + head + 3,
    }
    assert counts[("none", "one")] == 4874 and counts[("none", "fixup")] == 4831
    for (norm, scale), expected in counts.items():
        assert trainable_count(resnet(norm=norm, residual_scale=scale)) == expected, (norm, scale)


def block_outputs(model, depth):
    """A model returning, for every block: (its input, its shortcut's output or None, its output)."""
    n = (depth - 2) // 6
    taps, names = [], []
    previous = "stem_act"
    for s in range(1, 4):
        for b in range(1, n + 1):
            prefix = f"stage{s}_block{b}"
            down = s > 1 and b == 1
            names.append((prefix, down))
            taps += [model.get_layer(previous).output,
                     model.get_layer(f"{prefix}_shortcut").output if down else model.get_layer(previous).output,
                     model.get_layer(f"{prefix}_out_act").output]
            previous = f"{prefix}_out_act"
    return keras.Model(model.inputs, taps), names


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_skipinit_blocks_start_as_the_identity(norm):
    """De & Smith 2020, Sec. 4: alpha = 0, so each block computes relu(shortcut) = its shortcut
    (its input on same-shape blocks), on every example, in training and inference mode."""
    depth = 20
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 1)).astype(np.float32)
    for scale, identity in (("skipinit", True), ("one", False)):
        model = resnet(depth=depth, norm=norm, residual_scale=scale)
        probe, names = block_outputs(model, depth)
        for training in (False, True):
            outs = [keras.ops.convert_to_numpy(t) for t in probe([x], training=training)]
            for i, (prefix, down) in enumerate(names):
                block_in, shortcut, out = outs[3 * i: 3 * i + 3]
                assert np.abs(out).max() > 0, prefix
                if identity:
                    np.testing.assert_array_equal(out, shortcut, err_msg=prefix)
                    if not down:
                        np.testing.assert_array_equal(out, block_in, err_msg=prefix)
                else:  # the control: the paper's block is no identity
                    assert not np.allclose(out, shortcut), prefix
    assert len(names) == 9 and sum(down for _, down in names) == 2


def test_fixup_initialization_follows_its_three_rules():
    """Zhang et al. 2019, Sec. 3, on ResNet-56 (L = 27 branches of m = 2 convs): each branch's
    first conv is He's draw times L^(-1/2), its last conv and the head are 0, multipliers 1,
    scalar biases 0, and the convs outside the branches are plain He."""
    from zoo.models.resnet import fixup_factor

    factor = fixup_factor(27)
    assert factor == pytest.approx(27 ** -0.5)
    fixup = resnet(depth=56, width=16, norm="none", residual_scale="fixup")
    one = resnet(depth=56, width=16, norm="none", residual_scale="one")  # same seed, same names
    weights = {v.path: keras.ops.convert_to_numpy(v) for v in fixup.weights}
    ratios = []
    for s in range(1, 4):
        for b in range(1, 10):
            prefix = f"stage{s}_block{b}"
            w = weights[f"{prefix}_conv1/kernel"]
            he_std = np.sqrt(2.0 / (9 * w.shape[2]))  # He et al. 2015: Var = 2 / fan_in
            # the sample std of N draws scatters by about std / sqrt(2N): five of those allowed
            tolerance = 5 / np.sqrt(2 * w.size)
            assert abs(w.std() / (he_std * factor) - 1) < tolerance, (prefix, w.std(), he_std * factor)
            assert abs(w.std() / he_std - 1) > 0.5  # not He's own scale
            ratios.append(w.std() / (he_std * factor))
            plain = keras.ops.convert_to_numpy(one.get_layer(f"{prefix}_conv1").kernel)
            np.testing.assert_allclose(w, factor * plain, rtol=1e-6)  # the same draws, scaled
            assert np.all(weights[f"{prefix}_conv2/kernel"] == 0), prefix
            assert weights[f"{prefix}_scale/alpha"] == 1.0
            for bias in ("bias1a", "bias1b", "bias2a", "bias2b"):
                assert weights[f"{prefix}_{bias}/bias"] == 0.0, (prefix, bias)
    assert abs(np.mean(ratios) - 1) < 0.01, np.mean(ratios)  # 27 convs pooled
    assert np.all(weights["head/kernel"] == 0) and np.all(weights["head/bias"] == 0)
    assert weights["stem_bias/bias"] == 0.0 and weights["pool_bias/bias"] == 0.0
    np.testing.assert_array_equal(weights["stem_conv/kernel"],
                                  keras.ops.convert_to_numpy(one.get_layer("stem_conv").kernel))
    assert not any(name.endswith("_conv1/bias") or name == "stem_conv/bias" for name in weights)


def test_fixup_first_step_reaches_only_the_head_then_everything():
    """Rule 1's consequence: with the head at 0, no gradient reaches any conv at step 1; after
    one update it does (the head is no longer 0)."""
    model = resnet(norm="none", residual_scale="fixup")
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = np.arange(32) % 10
    step = make_step(model, x, y, "classification", lr=0.1)
    rows = step.layout.unpack(np.stack([step.train(tf.constant(x), tf.constant(y)).numpy() for _ in range(3)]))
    g = dict(zip(step.kernels, rows["grad_norm"].T))
    assert g["head"][0] > 0 and g["stem_conv"][0] == 0 and g["stage1_block1_conv2"][0] == 0
    assert g["stem_conv"][1] > 0 and g["stage1_block1_conv2"][1] > 0  # through the head, the identity path
    assert g["stage1_block1_conv1"][1] == 0 < g["stage1_block1_conv1"][2]  # behind conv2, 0 until step 2


@pytest.mark.parametrize("scale,norm", [("skipinit", "none"), ("skipinit", "batch"), ("fixup", "none")])
def test_scaled_resnets_survive_a_safe_mode_round_trip(tmp_path, scale, norm):
    import zoo.models._layers  # noqa: F401  registers the zoo's layers (and Fixup's initializer)

    model = resnet(norm=norm, residual_scale=scale)
    rng = np.random.default_rng(2)
    for v in model.weights:  # away from the initial zeros and ones, so the comparison means something
        v.assign(rng.normal(scale=0.3, size=v.shape).astype(np.float32) + (1 if "variance" in v.path else 0))
    path = tmp_path / f"{scale}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    x = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, rtol=1e-5, atol=1e-6)
    if scale == "fixup":
        init = loaded.get_layer("stage1_block1_conv1").kernel_initializer
        assert type(init).__name__ == "ScaledInitializer" and init.factor == pytest.approx(3 ** -0.5)


@pytest.mark.parametrize("overrides,message", [
    (["model.residual=false", "model.residual_scale=skipinit"],
     "model.residual_scale: skipinit scales residual branches, and model.residual=false has none; "
     "use residual_scale=one or residual=true"),
    (["model.residual=false", "model.norm=none", "model.residual_scale=fixup"],
     "model.residual_scale: fixup scales residual branches, and model.residual=false has none"),
    (["model.residual_scale=fixup"],  # the family's default norm is batch
     "model.residual_scale: fixup initializes nets without normalization (Zhang et al. 2019, Sec. 3), "
     "and a batch norm after each conv would undo its scaling; use model.norm=none, or "
     "residual_scale=skipinit with a norm"),
    (["model.residual_scale=rezero"], "model.residual_scale must be one of one, skipinit, fixup, got 'rezero'"),
])
def test_meaningless_residual_scales_are_refused(overrides, message):
    with pytest.raises(SpecError) as err:
        compose_spec(["model=resnet", "data.layout=image", "tracking.uri=null", *overrides])
    assert str(err.value).startswith(message)
    for ok in (["model.residual_scale=skipinit"], ["model.norm=none", "model.residual_scale=fixup"]):
        assert compose_spec(["model=resnet", "data.layout=image", "tracking.uri=null", *ok]).model.residual_scale
