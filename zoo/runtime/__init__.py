"""The process a job runs in (light: importing this package imports no TensorFlow).

    stopping.py  Ctrl-C and SIGTERM as one stop request that cannot be lost or cut short
    job.py       TensorFlow set-up for one job: fresh Keras state, seeds, determinism, thread pools
"""
