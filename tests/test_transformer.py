"""model=transformer: shapes and parameters by hand, identity at init under ReZero, safe-mode
files, and the step's gradient norms and per-position gradients against a bare GradientTape."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import make_step, probe_once, step_once
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec

T, F, OUT = 5, 3, 2
SMALL = dict(depth=1, width=8, heads=2)


def test_parameters_match_a_hand_count():
    """depth 1, width 8, 2 heads, MLP 4 x 8, on (5, 3) sequences, 2 outputs:
    embed (3+1)*8 = 32; positions 5*8 = 40; attention 4 x (8*8+8) = 288; MLP (8+1)*32 + (32+1)*8
    = 552; two LayerNorms 2 x 16 = 32; Pre-LN's final LayerNorm 16; head (8+1)*2 = 18."""
    pre = zoo.build_model("transformer", (T, F), OUT, **SMALL)
    assert pre.count_params() == 32 + 40 + 288 + 552 + 32 + 16 + 18 == 978
    post = zoo.build_model("transformer", (T, F), OUT, norm_position="post", **SMALL)
    assert post.count_params() == 978 - 16  # no final norm
    rms = zoo.build_model("transformer", (T, F), OUT, norm="rms", residual_scale="rezero", **SMALL)
    assert rms.count_params() == 978 - 24 + 2  # RMSNorm has a gain, no shift; two ReZero alphas
    tokens = zoo.build_model("transformer", (T,), OUT, vocab_size=11, **SMALL)
    assert tokens.count_params() == 978 - 32 + 11 * 8  # an embedding table instead of Dense(3 -> 8)


def test_shapes_of_both_heads_and_token_inputs():
    x = np.random.default_rng(0).normal(size=(4, T, F)).astype("float32")
    assert zoo.build_model("transformer", (T, F), OUT, **SMALL)(x).shape == (4, OUT)
    assert zoo.build_model("transformer", (T, F), OUT, head="sequence", **SMALL)(x).shape == (4, T, OUT)
    ids = np.random.default_rng(0).integers(0, 11, size=(4, T))
    assert zoo.build_model("transformer", (T,), OUT, vocab_size=11, **SMALL)(ids).shape == (4, OUT)


def test_the_memory_estimate_counts_the_built_parameters():
    from zoo import models

    spec = compose_spec(["model=transformer", "data=seq_digits", "data.mode=row", "model.depth=3"])
    est = models.estimate("transformer", spec.model, "seq_digits", spec.data)
    assert est.params == zoo.build_model("transformer", (8, 8), 10, depth=3).count_params()


def test_every_family_estimates_its_memory_beside_its_builder():
    """A family without an estimator would not be checked at all; only the user's builder
    (model=custom, which the zoo cannot see into) has none."""
    from zoo.models import MODELS

    assert [e.name for e in MODELS if not callable(e.tags.get("memory"))] == ["custom"]


@pytest.mark.parametrize("bad,message", [
    (["model.heads=3"], "model.heads must divide model.width (64)"),
    (["model.norm=batch"], "model.norm must be one of layer, rms, none"),
    (["model.norm_position=middle"], "model.norm_position must be one of pre, post"),
    (["model.residual_scale=fixup"], "model.residual_scale must be one of one, rezero"),
    (["model.head=last"], "model.head must be one of mean, sequence"),
    (["model.head=sequence"], "use model.head=mean, got sequence"),
    (["model.vocab_size=10"], "takes flat inputs but dataset 'seq_digits' is sequence"),
])
def test_impossible_values_are_refused_with_the_key(bad, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_spec(["model=transformer", "data=seq_digits", *bad])


@pytest.mark.parametrize("knobs", [dict(), dict(norm_position="post"), dict(norm="rms"),
                                   dict(norm="none", residual_scale="rezero", head="sequence"),
                                   dict(vocab_size=11)])
def test_saved_and_loaded_in_safe_mode(tmp_path, knobs):
    import zoo.models._layers  # noqa: F401  registers the zoo's layers

    shape = (T,) if knobs.get("vocab_size") else (T, F)
    model = zoo.build_model("transformer", shape, OUT, depth=2, width=8, heads=2, **knobs)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 11, size=(3, T)) if knobs.get("vocab_size") else rng.normal(size=(3, T, F)).astype("float32")
    for v in model.trainable_variables:  # not the initial values: ReZero's alphas start at 0
        v.assign(v.numpy() + rng.normal(scale=0.1, size=v.shape).astype("float32"))
    model.save(tmp_path / "t.keras")
    loaded = keras.saving.load_model(tmp_path / "t.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_rezero_blocks_start_as_the_identity_map(norm):
    """Bachlechner et al. 2020, eq. 4: x + alpha F(x) with alpha = 0 is x, for every block (with
    Pre-LN, whose norms sit inside the branch)."""
    model = zoo.build_model("transformer", (T, F), OUT, depth=3, width=8, heads=2, norm=norm,
                            residual_scale="rezero")
    names = ["positions", *(f"block{i:02d}_{part}_add" for i in (1, 2, 3) for part in ("attn", "mlp"))]
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in names])(
        np.random.default_rng(2).normal(size=(4, T, F)).astype("float32"))
    for later in outs[1:]:
        np.testing.assert_array_equal(later.numpy(), outs[0].numpy())
    trained = zoo.build_model("transformer", (T, F), OUT, depth=1, width=8, heads=2, norm=norm)
    outs = keras.Model(trained.inputs, [trained.get_layer(n).output for n in names[:3]])(
        np.ones((1, T, F), "float32"))
    assert not np.allclose(outs[2].numpy(), outs[0].numpy())  # residual_scale=one: not the identity


def _bare_kernel_norms(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    return {v.path.split("/")[-2]: float(np.sqrt(np.sum(g.numpy().astype(np.float64) ** 2)))
            for v, g in zip(kernels, tape.gradient(loss, kernels))}


def _bare_position_norms(model, source: str, x, y):
    """||dL/dh_t|| over batch and features for the sequence ``source`` outputs, from a
    GradientTape on the rest of the network taken as its own model (the residual stream is the
    only path from a block's input onwards)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    h = keras.Model(model.inputs, model.get_layer(source).output)(x, training=True)
    rest = keras.Model(model.get_layer(source).output, model.outputs[0])
    with tf.GradientTape() as tape:
        tape.watch(h)
        loss = loss_fn(y, rest(h, training=True))
    g = tape.gradient(loss, h).numpy().astype(np.float64)
    return np.sqrt(np.sum(g ** 2, axis=(0, 2)))


@pytest.mark.parametrize("position", ["pre", "post"])
def test_step_one_profiles_match_a_bare_gradient_tape(position):
    """The step's per-kernel gradient norms and the gradient reaching each position of every
    block's input, at step 1, against a bare GradientTape on the same weights and batch."""
    data = zoo.load_dataset("seq_digits", mode="row")
    x, y = data.x_train[:32], data.y_train[:32]
    model = zoo.build_model("transformer", (8, 8), 10, depth=4, width=16, heads=2, norm_position=position)
    kernels = _bare_kernel_norms(model, x, y)
    sources = ["positions", *(f"block{i:02d}_mlp_{'add' if position == 'pre' else 'norm'}" for i in (1, 2, 3))]
    positions = [_bare_position_norms(model, s, x, y) for s in sources]
    step = make_step(model, x, y, "classification", lr=0.0)
    got, probed = probe_once(step, x, y)
    assert list(step.kernels) == list(kernels)  # every Dense kernel, input side first
    np.testing.assert_allclose(got["grad_norm"], list(kernels.values()), rtol=1e-5)
    np.testing.assert_allclose(probed["time_grad"], np.array(positions), rtol=1e-5)
    assert step.probe_layout.field("time_grad").labels == ("block01", "block02", "block03", "block04")
    assert np.all(probed["time_grad"] > 0)


def test_a_run_records_the_gradient_reaching_each_position():
    result = zoo.train(["model=transformer", "data=seq_digits", "data.mode=row", "trainer.epochs=1",
                        "model.depth=2", "model.width=16", "model.heads=2"])
    stats = result.stats
    assert list(stats.seq_layers) == ["block01", "block02"]
    assert stats.time_grad.shape[1:] == (2, 8) and np.all(stats.time_grad > 0)
    assert np.all(np.isfinite(stats.grad_norm))
    # block_flow by hand, in float64 from the raw step-1 norms: block01's six kernels jointly
    # over block02's (query, key, value, attn_out, mlp_dense1, mlp_dense2)
    layers = list(stats.layers)
    joint = [np.sqrt(sum(stats.grad_norm[0, layers.index(f"{b}_{k}")] ** 2 for k in
                         ("query", "key", "value", "attn_out", "mlp_dense1", "mlp_dense2")))
             for b in ("block01", "block02")]
    assert result.final["summary/block_flow_init"] == pytest.approx(joint[0] / joint[1], rel=1e-12)


def test_token_ids_must_be_whole_numbers_below_the_vocabulary():
    """An Embedding truncates floats and clips ids silently: the data is checked before the
    model is built, naming model.vocab_size; with no fitting registered dataset, the refusal
    says what fits."""
    from types import SimpleNamespace

    from zoo.models.transformer import TransformerConfig

    ids = np.array([[0, 3, 4], [1, 2, 0]], np.float32)  # data=arrays hands ids over as float32
    TransformerConfig(vocab_size=5).check_data(SimpleNamespace(x_train=ids, x_val=ids))
    with pytest.raises(SpecError, match=r"vocab_size must exceed every token id: x_train holds ids in \[0, 4\], got 4"):
        TransformerConfig(vocab_size=4).check_data(SimpleNamespace(x_train=ids, x_val=ids))
    with pytest.raises(SpecError, match="not whole numbers .*data.standardize=false"):
        TransformerConfig(vocab_size=5).check_data(SimpleNamespace(x_train=ids, x_val=ids + 0.5))
    with pytest.raises(SpecError, match="datasets that fit: data=arrays with integer token ids"):
        compose_spec(["model=transformer", "data=seq_digits", "model.vocab_size=10"])


def test_a_run_on_token_ids_from_an_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, size=(96, 6))
    y = (x[:, 0] > 3).astype(np.int64)  # the first token decides the class
    np.savez(tmp_path / "tokens.npz", x_train=x[:64], y_train=y[:64], x_val=x[64:], y_val=y[64:])
    result = zoo.train(["model=transformer", "data=arrays", f"data.path={tmp_path / 'tokens.npz'}",
                        "data.standardize=false", "model.vocab_size=7", "model.depth=2", "model.width=16",
                        "model.heads=2", "trainer.epochs=2"])
    assert list(result.stats.seq_layers) == ["block01", "block02"] and np.all(np.isfinite(result.stats.grad_norm))
    with pytest.raises(Exception, match="model.vocab_size must exceed every token id"):
        zoo.train(["model=transformer", "data=arrays", f"data.path={tmp_path / 'tokens.npz'}",
                   "data.standardize=false", "model.vocab_size=5", "trainer.epochs=1"])


def test_zoo_diagnose_loads_a_saved_transformer(tmp_path):
    """A fresh process: zoo-diagnose registers the zoo's layers itself before loading in safe mode."""
    import subprocess
    import sys

    model = zoo.build_model("transformer", (T, F), OUT, **SMALL)
    model.save(tmp_path / "t.keras")
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, T, F)).astype("float32"), y=rng.integers(0, OUT, 64))
    out = subprocess.run([sys.executable, "-m", "zoo.cli.diagnose", str(tmp_path / "t.keras"), "--data",
                          str(tmp_path / "d.npz"), "--loss", "sparse_categorical_crossentropy",
                          "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stderr[-2000:]  # 0 healthy, 1 a problem found; 2 would be bad input
    assert "block01_query" in (tmp_path / "report" / "report.md").read_text()
