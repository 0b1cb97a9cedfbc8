"""TensorFlow set-up for one job: fresh Keras state, seeds, determinism, thread pools."""
from __future__ import annotations

import logging

import keras
import tensorflow as tf

log = logging.getLogger("zoo")


def setup_tensorflow(seed: int, deterministic: bool, threads: int = 0) -> None:
    """A sweep's worker process (joblib's loky reuses them) runs many jobs: the session is
    cleared so names and graphs do not carry over, and the pools are sized once, before
    TensorFlow's first op."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF generators; layer seeds derive from it
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if threads:
        threading = tf.config.threading
        if threading.get_intra_op_parallelism_threads() != threads:
            try:
                threading.set_intra_op_parallelism_threads(threads)
                threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # the runtime already started in this process: keep its pools
                log.warning("TensorFlow already initialized; trainer.threads=%d not applied", threads)
