"""A run's sharpness readings (zoo.instruments.sharpness), their file and their MLflow names, and
what the verdict says of them: numpy only.

Saved as ``stats/sharpness.npz`` beside the raw statistics file (numpy, no pickles): load it
with ``SharpnessRecord.load(path)`` or ``numpy.load``. Reading r was taken at the weights
*before* update ``step[r]``, as row t of the raw statistics file describes the gradient before
update t.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

SECTION = "3 sharpness"  # MLflow's chart section, after "2 learning" (zoo.instruments.series)
KEYS = {"plain": f"{SECTION}/lambda_max", "preconditioned": f"{SECTION}/preconditioned_lambda_max",
        "threshold": f"{SECTION}/threshold"}
FILE = "sharpness.npz"
FOLDER = "stats"


@dataclass
class SharpnessRecord:
    """Every reading of one run (R readings).

    step [R] (int): the update the reading preceded (1 = at initialization).
    lambda_max [R] (float): λ_max of the loss Hessian, or of P^-1/2 H P^-1/2 when ``preconditioned``.
    threshold [R] (float): the optimizer's stability threshold at that step (NaN: none known).
    lr [R] (float): the learning rate of the update that followed.
    iterations [R] (int): Hessian-vector products the reading took.
    residual [R] (float): ‖Av − λv‖/|λ| of its eigenvector.
    preconditioned (bool), optimizer (text: "gradient descent", "Adam" ...), rule (text: the
    threshold's formula), examples (int: the measurement batch, 0 = each step's own batch),
    method (text: how Hessian-vector products were taken).
    """
    step: np.ndarray
    lambda_max: np.ndarray
    threshold: np.ndarray
    lr: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    preconditioned: bool = False
    optimizer: str = ""
    rule: str = ""
    examples: int = 0
    method: str = ""

    @classmethod
    def empty(cls, **context) -> "SharpnessRecord":
        ints, floats = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return cls(ints, floats, floats, floats, ints, floats, **context)

    def __len__(self) -> int:
        return len(self.step)

    def key(self) -> str:
        """The MLflow key of λ_max."""
        return KEYS["preconditioned" if self.preconditioned else "plain"]

    def ratio(self) -> np.ndarray:
        """λ_max / threshold of each reading (NaN where there is no threshold)."""
        return self.lambda_max / self.threshold

    def save(self, path) -> None:
        np.savez_compressed(path, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def load(cls, path) -> "SharpnessRecord":
        """Read a sharpness file. Raises ValueError naming what is wrong with one that is not."""
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {f.name: data[f.name] for f in fields(cls)}
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise ValueError(f"{path}: not a gradzoo sharpness file: {str(err).splitlines()[0][:200]}") from None
        arrays = {k: v for k, v in values.items() if v.ndim == 1}
        if len({len(v) for v in arrays.values()}) > 1:
            raise ValueError(f"{path}: its arrays differ in length")
        return cls(**arrays, preconditioned=bool(values["preconditioned"]), optimizer=str(values["optimizer"]),
                   rule=str(values["rule"]), examples=int(values["examples"]), method=str(values["method"]))


def beyond_stability(record: SharpnessRecord | None, diverged_step: int) -> str | None:
    """What a diverged run's reason adds when its sharpness had crossed the optimizer's
    stability threshold before (or at) the step it diverged at: the first such reading, as
    λ_max·η in units of 1/η ("sharpness 2.3/η at step 41: beyond gradient descent's stability
    limit 2/η"). None without such a reading."""
    if record is None or not len(record):
        return None
    r = record
    seen = (r.step <= diverged_step) & np.isfinite(r.lambda_max) & np.isfinite(r.threshold) & (r.lambda_max > r.threshold)
    if not np.any(seen):
        return None
    i = int(np.argmax(seen))
    what = "preconditioned sharpness" if r.preconditioned else "sharpness"
    limit = r.threshold[i] * r.lr[i]
    return (f"{what} {r.lambda_max[i] * r.lr[i]:.3g}/η at step {int(r.step[i])}: beyond {r.optimizer}'s "
            f"stability limit {limit:.3g}/η")
