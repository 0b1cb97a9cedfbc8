"""optimizer.warmup_steps: the schedule against its closed form, the learning rate a real run's
updates used, the validation errors, and warmup_steps=0 building what it built before."""
import keras
import numpy as np
import pytest

import zoo
from zoo.config.optimizers import OPTIMIZERS, learning_rate
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec

OFF = ["tracking.uri=null"]


def closed_form(lr: float, warmup: int, t: int) -> float:
    """lr * min(1, (t + 1) / W) in float64 (Xiong et al. 2020, Sec. 3.1, counted from t = 0)."""
    return lr * min(1.0, (t + 1) / warmup)


@pytest.mark.parametrize("lr,warmup", [(0.1, 2), (0.1, 5), (3e-4, 100), (1.0, 1000)])
def test_schedule_matches_the_closed_form_at_the_edges_of_the_ramp(lr, warmup):
    schedule = learning_rate(lr, warmup)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    for t in (0, 1, warmup - 1, warmup, 2 * warmup):
        got = float(schedule(t))  # Keras computes (lr/W - lr)(1 - t/(W-1)) + lr in float32: its
        # rounding is a few ulps of lr (8 ulps = 1e-6 lr), whatever the step's own value
        np.testing.assert_allclose(got, closed_form(lr, warmup, t), rtol=1e-6, atol=1e-6 * lr, err_msg=f"t={t}")
    assert float(schedule(0)) < float(schedule(warmup - 1))  # it does ramp (1/W of lr at t = 0)
    np.testing.assert_allclose(float(schedule(warmup - 1)), lr, rtol=1e-6)  # full lr at update W


@pytest.mark.parametrize("warmup", [0, 1])
def test_no_warmup_is_the_plain_learning_rate(warmup):
    assert learning_rate(0.01, warmup) == 0.01 and isinstance(learning_rate(0.01, warmup), float)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0, got -1"):
        learning_rate(0.01, -1)


@pytest.mark.parametrize("name,options,plain", [
    ("adam", {}, lambda: keras.optimizers.Adam(learning_rate=1e-3)),
    ("rmsprop", {}, lambda: keras.optimizers.RMSprop(learning_rate=1e-3)),
    ("sgd", {"momentum": 0.9, "nesterov": True},
     lambda: keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9, nesterov=True)),
])
def test_warmup_zero_builds_exactly_the_optimizer_built_before(name, options, plain):
    built = OPTIMIZERS.build(name, lr=1e-3, warmup_steps=0, **options)
    before = plain()  # what build_<name>(lr=...) returned before the key existed
    assert type(built) is type(before)
    unnamed = lambda o: {k: v for k, v in o.get_config().items() if k != "name"}  # adam, adam_1, ...
    assert unnamed(built) == unnamed(before)
    assert built.get_config()["learning_rate"] == pytest.approx(1e-3)  # a number, not a schedule
    warm = OPTIMIZERS.build(name, lr=1e-3, warmup_steps=10, **options).get_config()["learning_rate"]
    assert warm["class_name"] == "PolynomialDecay", warm  # and the key does change it when set


def test_a_real_run_updates_with_the_warmed_up_learning_rate():
    """Plain SGD moves each kernel by lr_t times its gradient, so lr_t = ||dW|| / ||g|| per step:
    read from the run's own records (update_ratio x weight_norm / grad_norm_clipped)."""
    lr, warmup = 0.05, 8
    result = zoo.train([*OFF, "optimizer=sgd", f"optimizer.lr={lr}", f"optimizer.warmup_steps={warmup}",
                        "model.depth=3", "model.width=16", "trainer.epochs=1"])
    s = result.stats
    used = s.update_ratio * s.weight_norm / s.grad_norm_clipped  # [steps, kernels]
    expected = np.array([closed_form(lr, warmup, t) for t in range(len(s.step))])
    assert len(s.step) == 23 > 2 * warmup
    np.testing.assert_allclose(used, np.broadcast_to(expected[:, None], used.shape), rtol=2e-3)
    assert used[0, 0] == pytest.approx(lr / warmup, rel=2e-3) and used[-1, 0] == pytest.approx(lr, rel=2e-3)


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.warmup_steps=-1"], "optimizer.warmup_steps must be >= 0, got -1"),
    (["optimizer.warmup_steps=1.5"], "optimizer.warmup_steps: Value '1.5' of type 'float' could not be converted to Integer"),
    (["optimizer=sgd", "optimizer.warmup_steps=abc"], "optimizer.warmup_steps: Value 'abc' of type 'str' could not be converted to Integer"),
    (["optimizer.warmup_steps=231"],  # digits: 1,437 training examples, 23 batches of 64, 10 epochs
     "optimizer.warmup_steps is longer than the whole run: 231 warm-up steps > 230 training steps "
     "(trainer.epochs 10 x 23 steps of trainer.batch_size 64 over 1,437 training examples); "
     "lower it or raise trainer.epochs"),
    (["optimizer=momentum", "optimizer.warmup_steps=13", "trainer.epochs=1", "trainer.batch_size=128"],
     "optimizer.warmup_steps is longer than the whole run: 13 warm-up steps > 12 training steps"),
])
def test_impossible_warmups_fail_at_validation(overrides, message):
    with pytest.raises(SpecError) as err:
        compose_spec([*OFF, *overrides])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_warmup_as_long_as_the_run_is_accepted():
    assert compose_spec([*OFF, "optimizer.warmup_steps=230"]).optimizer.warmup_steps == 230
    assert compose_spec([*OFF, "optimizer=rmsprop"]).optimizer.warmup_steps == 0  # the default: off
