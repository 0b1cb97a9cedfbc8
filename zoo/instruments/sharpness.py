"""Sharpness: the largest eigenvalue λ_max of the training loss's Hessian with respect to the
trainable weights, and the stability threshold of the optimizer it is read against.

Gradient descent with step η on a quadratic is stable only while λ_max < 2/η; on neural nets,
full-batch gradient descent drives λ_max up until it reaches 2/η and then hovers there (Cohen
et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability",
ICLR, Sec. 3 and Fig. 1). For Adam the quantity that equilibrates is the *preconditioned*
sharpness λ_max(P^-1 H) = λ_max(P^-1/2 H P^-1/2), P the optimizer's diagonal preconditioner,
at (2 + 2β₁)/((1 − β₁)η), 38/η at β₁ = 0.9 (Cohen et al. 2022, "Adaptive Gradient Methods at
the Edge of Stability", arXiv 2207.14484).

How it is read (:class:`SharpnessMeter`):

- **Block power iteration** (subspace iteration with Rayleigh-Ritz) on Hessian-vector
  products: ``block`` orthonormal vectors V ← qr(AV), λ the largest eigenvalue of VᵀAV (the top
  Ritz value), at most ``iterations`` block iterations of ``block`` products each, stopping
  early once λ changes by at most ``tolerance``·|λ| between two iterations (PyHessian's rule,
  Yao et al. 2020). The reading keeps its Ritz vector's residual ‖Ax − λx‖/|λ|: some eigenvalue
  lies within that relative distance of λ. ``block`` = 1 is plain power iteration.
- **Warm start**: each reading starts from the previous reading's Ritz vectors, so along a
  training run two block iterations usually suffice; the first starts from seeded Gaussian
  vectors. Why a block: at the edge of stability the top eigenvector turns between readings,
  and a warm start from the previous one alone (plain power iteration) can stop, by the rule
  above, on what is now the second eigenvalue: along the study's run, 13% below a converged
  cold reading at worst; with the previous top three tracked, 0.4% (``benchmarks/sharpness.py
  --accuracy``).
- **The largest, not the largest in size**: iteration finds the eigenvalues of largest
  magnitude. If a negative one dominates, a second pass on A − λ_min·I (from fresh vectors)
  finds λ_max.
- **Hessian-vector products** by double backward (nested ``tf.GradientTape``s: the gradient
  of gᵀv) or forward-over-backward (``tf.autodiff.ForwardAccumulator`` over the gradient),
  both exact; ``benchmarks/sharpness.py`` measures which is faster (``DEFAULT_METHOD``).
- **On given batches**: a list of (x, y) chunks whose example-weighted mean loss is the loss
  measured, so a measurement batch larger than fits in memory is read chunk by chunk; the
  objective is the caller's (the zoo's: zoo.instruments.sharpness.objective_of).
- **Batch norm and dropout**: the objective runs the model in inference mode (the caller's
  ``training=False``): dropout off and batch norm with its moving statistics, so the operator
  is one fixed symmetric matrix (a dropout mask drawn per product would make power iteration
  chase noise) and no variable of the model is touched (batch norm in training mode would
  update its moving statistics: the measurement would change the training). For a
  batch-normalized net this is the Hessian of the inference-mode loss, not of the
  training-mode objective; Cohen et al.'s nets have neither.

Nothing here changes a variable of the model or of the optimizer: with the meter on, the
weights are bit for bit those without it (tests/test_sharpness.py checks it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from zoo.instruments.sharpness_record import KEYS, SharpnessRecord

METHODS = ("double_backward", "forward_over_backward")
DEFAULT_METHOD = "double_backward"  # benchmarks/sharpness.py: faster where both run; the only one through an LSTM
DEFAULT_ITERATIONS = 20             # block iterations per reading at most
DEFAULT_BLOCK = 3                   # vectors iterated together: benchmarks/sharpness.py --accuracy
DEFAULT_TOLERANCE = 1e-3            # stop once |λ_k − λ_(k−1)| <= tolerance·|λ_k| (PyHessian's default)


@dataclass(frozen=True)
class Threshold:
    """The largest sharpness an optimizer is stable at, on a quadratic: ``value`` = ``factor``/η.

    ``factor`` is η × threshold (2 for gradient descent), ``lr`` the learning rate η it was
    computed at, ``preconditioned`` whether it bounds the preconditioned sharpness, ``rule`` the
    formula in words, and ``optimizer`` what it is called in a sentence."""
    value: float
    factor: float
    lr: float
    preconditioned: bool
    rule: str
    optimizer: str


def current_lr(optimizer) -> float:
    """The learning rate the optimizer's next update uses (a schedule at its current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def stability_threshold(optimizer) -> Threshold | None:
    """The stability threshold of a Keras optimizer at its current learning rate η, or None for
    an optimizer without one here.

    - SGD (Keras' heavy ball, v ← βv − ηg, w ← w + v; β = 0 is gradient descent): (2 + 2β)/η;
      with ``nesterov``: (2 + 2β)/((1 + 2β)η) (Cohen et al. 2021, Appendix, momentum's
      thresholds). Both from the linear recurrence on a quadratic of curvature λ, whose
      spectral radius reaches 1 there (tests/test_sharpness.py runs Keras' SGD on one).
    - Adam (and AdamW): (2 + 2β₁)/((1 − β₁)η) on the preconditioned sharpness (Cohen et al.
      2022, Sec. 2: Adam as preconditioned EMA momentum), 38/η at β₁ = 0.9.
    - RMSprop: (2 + 2β)/η on the preconditioned sharpness, β its (heavy-ball) ``momentum``:
      2/η at Keras' default 0.
    """
    lr = current_lr(optimizer)
    if not lr > 0:
        return None
    if isinstance(optimizer, keras.optimizers.SGD):
        beta = float(optimizer.momentum)
        if optimizer.nesterov and beta:
            factor = (2 + 2 * beta) / (1 + 2 * beta)
            return Threshold(factor / lr, factor, lr, False, f"(2 + 2β)/((1 + 2β)η), Nesterov β={beta:g}",
                             f"SGD with Nesterov momentum {beta:g}")
        if beta:
            return Threshold((2 + 2 * beta) / lr, 2 + 2 * beta, lr, False, f"(2 + 2β)/η, momentum β={beta:g}",
                             f"SGD with momentum {beta:g}")
        return Threshold(2 / lr, 2.0, lr, False, "2/η", "gradient descent")
    if isinstance(optimizer, keras.optimizers.Adam):
        b1 = float(optimizer.beta_1)
        factor = (2 + 2 * b1) / (1 - b1)
        return Threshold(factor / lr, factor, lr, True, f"(2 + 2β₁)/((1 − β₁)η), β₁={b1:g}", "Adam")
    if isinstance(optimizer, keras.optimizers.RMSprop):
        beta = float(optimizer.momentum)
        rule = f"(2 + 2β)/η, momentum β={beta:g}" if beta else "2/η"
        return Threshold((2 + 2 * beta) / lr, 2 + 2 * beta, lr, True, rule, "RMSprop")
    return None


def preconditioned(optimizer) -> bool:
    """Does the optimizer divide each coordinate by its own scale (Adam, AdamW, RMSprop)?"""
    return isinstance(optimizer, (keras.optimizers.Adam, keras.optimizers.RMSprop))


def _slot(optimizer, variable, slot: str):
    """The optimizer's ``slot`` variable for ``variable``, by the name Keras gives it
    (``{variable.path with / as _}_{slot}``, keras BaseOptimizer.add_variable_from_reference),
    found among the public ``optimizer.variables``."""
    name = f"{variable.path.replace('/', '_')}_{slot}"
    found = [v for v in optimizer.variables if v.name == name]
    if len(found) != 1:
        raise ValueError(f"preconditioner: the optimizer has no variable {name!r} (is it built over "
                         f"these weights?)")
    return found[0]


def preconditioner(optimizer, variables: Sequence) -> list | None:
    """The diagonal preconditioner P of the optimizer's latest update, as Keras applied it, one
    tensor per variable; None before the first update (there is none yet) or for an optimizer
    that has none (SGD).

    - Adam: w ← w − η·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ)·m/(√v + ε) (keras Adam.update_step), i.e.
      w ← w − η·m̂/P with P = (√v + ε)/sqrt(1 − β₂ᵗ) = √v̂ + ε/sqrt(1 − β₂ᵗ), t the number of
      updates so far (with ``amsgrad``, v is its running maximum).
    - RMSprop: w ← w − η·g/sqrt(v + ε), P = sqrt(v + ε); centered: sqrt(v − ḡ² + ε).
    """
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if not preconditioned(optimizer) or steps == 0:
        return None
    out = []
    if isinstance(optimizer, keras.optimizers.Adam):
        slot = "velocity_hat" if optimizer.amsgrad else "velocity"
        for var in variables:
            v = tf.convert_to_tensor(_slot(optimizer, var, slot))
            # β₂ᵗ as Keras computes it (ops.cast of the Python float: through float32)
            correction = tf.sqrt(1 - keras.ops.power(keras.ops.cast(optimizer.beta_2, v.dtype),
                                                     keras.ops.cast(steps, v.dtype)))
            out.append((tf.sqrt(v) + tf.cast(optimizer.epsilon, v.dtype)) / correction)
        return out
    for var in variables:
        v = tf.convert_to_tensor(_slot(optimizer, var, "velocity"))
        if optimizer.centered:
            v = v - tf.square(tf.convert_to_tensor(_slot(optimizer, var, "average_gradient")))
        out.append(tf.sqrt(v + tf.cast(optimizer.epsilon, v.dtype)))
    return out


@dataclass(frozen=True)
class Reading:
    """One sharpness reading: ``lambda_max`` (of H, or of P^-1/2 H P^-1/2 when
    ``preconditioned``), the Hessian-vector products it took (``iterations``: block iterations
    times the block size, both passes), and its ``residual`` ‖Ax − λx‖/|λ| for its Ritz vector x
    (some eigenvalue lies within that relative distance of λ). NaN when a Hessian-vector product
    is not finite (the loss overflows, or a weight is NaN)."""
    lambda_max: float
    iterations: int
    residual: float
    preconditioned: bool


def _dot(a, b):
    """Σ aᵢ·bᵢ over a list of tensors, in float64 whatever the weights' dtype."""
    return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float64) * tf.cast(y, tf.float64)) for x, y in zip(a, b)])


def _scaled(vs, factor):
    return [v * tf.cast(factor, v.dtype) for v in vs]


class SharpnessMeter:
    """λ_max of the Hessian of ``objective`` (or of the preconditioned Hessian) at the current
    weights, by warm-started block power iteration (the module's docstring says how).

    Args:
        objective: ``objective(x, y) -> scalar``, the mean loss of a batch; it should run the
            model in inference mode (``training=False``) and change no variable.
        variables: the weights the Hessian is taken with respect to (the trainable ones).
        iterations: block iterations per reading at most (per pass), >= 1; each takes
            ``block`` Hessian-vector products.
        tolerance: stop once the top Ritz value changes by at most this fraction between two
            iterations, >= 0 (0: always ``iterations``).
        block: vectors iterated together, >= 1 (1: plain power iteration); the top ``block``
            eigenvectors of the previous reading start the next one, so a new top eigenvalue
            that was the second or third before is found at once.
        method: "double_backward" or "forward_over_backward" (:data:`METHODS`).
        seed: of the first reading's start vectors (same seed, same readings).

    State: the latest Ritz basis (``basis``, a non-trainable float64 ``tf.Variable`` of
    [weights, block], the warm start of the next reading) and whether it holds one (``warm``).

    Raises:
        ValueError: for an unknown ``method``, ``iterations`` or ``block`` < 1, a negative or
            non-finite ``tolerance``, or no variables.
    """

    def __init__(self, objective: Callable, variables: Sequence, *, iterations: int = DEFAULT_ITERATIONS,
                 tolerance: float = DEFAULT_TOLERANCE, block: int = DEFAULT_BLOCK, method: str = DEFAULT_METHOD,
                 seed: int = 0):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        for name, value in (("iterations", iterations), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < float("inf")):
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
        self.variables = list(variables)
        if not self.variables:
            raise ValueError("variables: no weights to take the Hessian with respect to")
        self.objective, self.iterations, self.tolerance, self.method = objective, iterations, float(tolerance), method
        self.seed = int(seed)
        self._sizes = [int(np.prod(v.shape)) for v in self.variables]
        self.block = min(block, sum(self._sizes))
        self.basis = tf.Variable(tf.zeros((sum(self._sizes), self.block), tf.float64), trainable=False)
        self.warm = False  # does ``basis`` hold a previous reading's Ritz vectors?
        self._readings = 0
        # traced once per chunk shape; the iteration around them runs in Python, so that a
        # measurement batch of many chunks is not one huge graph (16 chunks: 80 s to trace)
        self._chunk = tf.function(self._apply_chunk, reduce_retracing=True)
        self._ritz = tf.function(_rayleigh_ritz, reduce_retracing=True)

    # -- Hessian-vector products -----------------------------------------------------------------
    def _gradients(self, tape, loss):
        return tape.gradient(loss, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def hvps(self, batches, vectors: list) -> list:
        """[H·v for v in ``vectors``] (each a list of tensors shaped as the variables) for the
        example-weighted mean loss over ``batches`` [(x, y, weight)]. By double backward, one
        forward and first backward pass serve every vector."""
        total = None
        for x, y, weight in batches:
            if self.method == "double_backward":
                with tf.GradientTape(persistent=len(vectors) > 1) as outer:
                    with tf.GradientTape() as inner:
                        loss = self.objective(x, y)
                    grads = self._gradients(inner, loss)
                    dots = [_dot(grads, v) for v in vectors]
                parts = [outer.gradient(d, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                         for d in dots]
                del outer
            else:
                # the tf.Variable under each keras.Variable (its public .value): what the forward pass reads
                primals = [getattr(v, "value", v) for v in self.variables]
                parts = []
                for v in vectors:
                    with tf.autodiff.ForwardAccumulator(primals, v) as acc:
                        with tf.GradientTape() as tape:
                            loss = self.objective(x, y)
                        grads = self._gradients(tape, loss)
                    parts.append(acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO))
            parts = [_scaled(p, weight) for p in parts]
            total = parts if total is None else [[a + b for a, b in zip(t, p)] for t, p in zip(total, parts)]
        return total

    def hvp(self, batches, vector) -> list:
        """H·v for one ``vector`` (a list of tensors shaped as the variables)."""
        return self.hvps(batches, [vector])[0]

    def _unflat(self, column) -> list:
        parts = tf.split(column, self._sizes)
        return [tf.cast(tf.reshape(p, v.shape), v.dtype) for p, v in zip(parts, self.variables)]

    def _flat(self, tensors):
        return tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], 0)

    # -- block power iteration -------------------------------------------------------------------
    def _apply_chunk(self, x, y, weight, scale, basis):
        """weight · S H S · basis for one chunk's loss, S = diag(``scale``) (None: the identity),
        basis [N, b] float64."""
        columns = [basis[:, j] for j in range(self.block)]
        vectors = [self._unflat(c if scale is None else c * scale) for c in columns]
        out = [self._flat(h) for h in self.hvps([(x, y, weight)], vectors)]
        return tf.stack([h if scale is None else h * scale for h in out], axis=1)

    def _iterate(self, batches, scale, start, shift: float) -> tuple:
        """(top Ritz value, lowest, block iterations, residual, next basis) of A − shift·I,
        A = S H S, from the orthonormal ``start`` [N, b]: subspace iteration with Rayleigh-Ritz,
        at most ``iterations``, stopping once the top value changes by at most ``tolerance`` of
        itself; NaN values and ``start`` as the basis once a product is not finite."""
        basis, top, low, residual, done = start, float("inf"), 0.0, float("nan"), 0
        shift_t = tf.constant(shift, tf.float64)
        for done in range(1, self.iterations + 1):
            image = tf.add_n([self._chunk(x, y, w, scale, basis) for x, y, w in batches]) - shift_t * basis
            if not bool(tf.reduce_all(tf.math.is_finite(image))):  # an overflowing or NaN model: no eigenvalue to find
                return float("nan"), float("nan"), done, float("nan"), start
            theta, basis, residual = self._ritz(basis, image)
            prev, top, low, residual = top, float(theta[0]), float(theta[-1]), float(residual)
            if abs(top - prev) <= self.tolerance * abs(top):
                break
        return top, low, done, residual, basis

    def _start(self, warm: bool):
        if warm:
            return tf.convert_to_tensor(self.basis)
        seed = tf.constant([self.seed, self._readings], tf.int32)
        q, _ = tf.linalg.qr(tf.random.stateless_normal(self.basis.shape, seed=seed, dtype=tf.float64))
        return q

    def read(self, batches, scale: Sequence | None = None) -> Reading:
        """One reading on ``batches``: a list of (x, y) or (x, y, weight) chunks (weight: the
        chunk's share of the loss; by default its share of the examples, so the loss measured is
        the mean over all of them). ``scale``: P^-1/2 per variable for the preconditioned
        sharpness (:func:`preconditioner`), None for the Hessian's own.

        Raises:
            ValueError: for no batches.
        """
        weighted = _weighted(batches)
        flat = None if scale is None else self._flat(scale)
        lam, low, used, residual, basis = self._iterate(weighted, flat, self._start(self.warm), 0.0)
        if -low > abs(lam):  # a negative eigenvalue dominates: λ_max is the top of A − low·I, plus low
            top, _, more, residual, basis = self._iterate(weighted, flat, self._start(False), low)
            lam, used = top + low, used + more
            residual = residual * abs(top) / abs(lam) if lam else float("nan")
        self.basis.assign(basis)
        self.warm, self._readings = True, self._readings + 1
        return Reading(lam, used * self.block, residual, scale is not None)

    def read_optimizer(self, batches, optimizer) -> Reading | None:
        """The reading ``optimizer``'s stability threshold bounds: the preconditioned sharpness for
        Adam and RMSprop (None before their first update: no preconditioner yet), the Hessian's
        own for any other."""
        if preconditioned(optimizer):
            p = preconditioner(optimizer, self.variables)
            return None if p is None else self.read(batches, inverse_sqrt(p))
        return self.read(batches)

    def reset(self) -> None:
        """Forget the eigenvectors: the next reading starts cold."""
        self.warm = False


def _rayleigh_ritz(basis, image):
    """From an orthonormal ``basis`` [N, b] and ``image`` = A·basis: the Ritz values (descending),
    the next orthonormal basis qr(A·basis), its first column the top Ritz direction, and the top
    Ritz vector's residual ‖Ax − θx‖/|θ|."""
    theta, s = tf.linalg.eigh(0.5 * (tf.transpose(basis) @ image + tf.transpose(image) @ basis))
    theta, s = tf.reverse(theta, [0]), tf.reverse(s, [1])
    ritz, a_ritz = basis @ s[:, :1], image @ s[:, :1]
    residual = tf.norm(a_ritz - theta[0] * ritz) / tf.abs(theta[0])
    following, _ = tf.linalg.qr(image @ s)
    return theta, following, residual


def _weighted(batches) -> list:
    """[(x, y, weight)] with weights summing to 1: each chunk's share of the examples unless given."""
    batches = list(batches)
    if not batches:
        raise ValueError("batches: nothing to measure on")
    if all(len(b) == 3 for b in batches):
        return [(x, y, tf.constant(float(w), tf.float64)) for x, y, w in batches]
    sizes = [int(tf.nest.flatten(x)[0].shape[0]) for x, _ in batches]
    total = sum(sizes)
    return [(x, y, tf.constant(n / total, tf.float64)) for (x, y), n in zip(batches, sizes)]


def inverse_sqrt(p: Sequence) -> list:
    """P^-1/2 per variable, from :func:`preconditioner`'s P."""
    return [1.0 / tf.sqrt(x) for x in p]


# -- a run's readings: the zoo's loop (zoo.training.run) and any other client -----------------------------
def objective_of(step) -> Callable:
    """The objective a zoo.training.step.InstrumentedStep descends, in inference mode: the main head's
    data loss plus the weighted auxiliary heads' plus the weight penalty (the update follows
    the gradient of all three), ``objective(x, y) -> scalar``."""
    def objective(x, y):
        out = step.forward(x, training=False)
        loss = step.loss_fn(y, out["head"])
        for head in step.aux_heads:
            loss = loss + step.aux_weight * step.loss_fn(y, out[head])
        for i in step.regularized:
            loss = loss + tf.cast(step.variables[i].regularizer(step.variables[i]), loss.dtype)
        return loss
    return objective


def take_examples(n: int, examples: int, seed: int = 0) -> np.ndarray:
    """Indices of a fixed measurement batch: ``examples`` of ``n`` drawn without replacement with
    ``seed`` (all ``n`` when ``examples`` >= n), in their order in the data."""
    if examples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:examples])


def measurement_batches(x, y, examples: int, chunk: int, seed: int = 0) -> list:
    """A fixed measurement batch of the training arrays ``x``, ``y`` (arrays, or lists / dicts of
    arrays) as (x, y) chunks of at most ``chunk`` examples (:func:`take_examples`)."""
    n = len(tf.nest.flatten(x)[0])
    idx = take_examples(n, examples, seed)
    pick = lambda tree, i: tf.nest.map_structure(lambda a: tf.convert_to_tensor(np.asarray(a)[i]), tree)  # noqa: E731
    return [(pick(x, idx[s:s + chunk]), pick(y, idx[s:s + chunk])) for s in range(0, len(idx), chunk)]


class SharpnessSeries:
    """Readings of one run every ``every`` steps, kept and named for MLflow.

    Args:
        meter: the :class:`SharpnessMeter` (its warm start is this series' state).
        optimizer: the Keras optimizer training the weights: which sharpness is read
            (:meth:`SharpnessMeter.read_optimizer`) and its :func:`stability_threshold`.
        every: steps between readings, >= 1: before updates 1, 1 + every, 1 + 2·every, ...
        batches: the fixed measurement batch as (x, y) chunks (:func:`measurement_batches`), or
            None to read each time on the batch the step trains on.
        examples: how many examples ``batches`` holds (0 with None), for the record.
    """

    def __init__(self, meter: SharpnessMeter, optimizer, every: int, batches: list | None = None,
                 examples: int = 0):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.meter, self.optimizer, self.every, self.batches = meter, optimizer, every, batches
        self.examples = examples if batches is not None else 0
        self.rows: list[tuple] = []
        threshold = stability_threshold(optimizer)
        self.context = {"preconditioned": preconditioned(optimizer), "method": meter.method,
                        "optimizer": threshold.optimizer if threshold else type(optimizer).__name__,
                        "rule": threshold.rule if threshold else ""}

    def due(self, step: int) -> bool:
        """Is a reading due before update ``step`` (1-based)?"""
        return (step - 1) % self.every == 0

    def read(self, step: int, x=None, y=None) -> dict[str, float]:
        """Read before update ``step`` (on the step's own batch ``x``, ``y`` when there is no
        fixed measurement batch); returns the MLflow metrics of the reading (none when the
        optimizer has no preconditioner yet, before Adam's first update)."""
        batches = self.batches if self.batches is not None else [(x, y)]
        reading = self.meter.read_optimizer(batches, self.optimizer)
        if reading is None:
            return {}
        threshold = stability_threshold(self.optimizer)
        limit = threshold.value if threshold else float("nan")
        self.rows.append((step, reading.lambda_max, limit, current_lr(self.optimizer), reading.iterations,
                          reading.residual))
        metrics = {KEYS["preconditioned" if reading.preconditioned else "plain"]: reading.lambda_max}
        if threshold:
            metrics[KEYS["threshold"]] = limit
        return metrics

    def record(self) -> SharpnessRecord:
        if not self.rows:
            return SharpnessRecord.empty(examples=self.examples, **self.context)
        step, lam, limit, lr, used, residual = (np.array(c) for c in zip(*self.rows))
        return SharpnessRecord(step.astype(np.int64), lam.astype(np.float64), limit.astype(np.float64),
                               lr.astype(np.float64), used.astype(np.int64), residual.astype(np.float64),
                               examples=self.examples, **self.context)


def series_for(step, x_train, y_train, trainer, seed: int = 0) -> SharpnessSeries | None:
    """The zoo loop's readings (zoo.training.run) from a run's ``trainer`` config section: every
    ``sharpness_every`` steps (None when 0), on a fixed batch of ``sharpness_examples`` training
    examples read in chunks of ``batch_size`` (each step's own batch when 0), at most
    ``sharpness_iterations`` block iterations per reading, the first start vectors seeded by
    ``seed``."""
    if not trainer.sharpness_every:
        return None
    meter = SharpnessMeter(objective_of(step), step.variables, iterations=trainer.sharpness_iterations, seed=seed)
    examples = trainer.sharpness_examples
    batches = measurement_batches(x_train, y_train, examples, trainer.batch_size) if examples else None
    held = min(examples, len(tf.nest.flatten(x_train)[0]))
    return SharpnessSeries(meter, step.optimizer, trainer.sharpness_every, batches, held)
