"""Stopping a script that runs a monitored fit inside its own ``mlflow.start_run()`` (issue 31):
a Ctrl-C while the monitor writes its records is delivered once they are whole (it used to be
lost: the script went on and exited 0), and a run left RUNNING by a SIGTERM carries its owner,
so ``zoo-runs repair`` ends it."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow import MlflowClient

from zoo.tracking.repair import repair

SCRIPT = textwrap.dedent("""
    import os, pathlib, sys, time
    import keras, mlflow, numpy as np
    import zoo
    from zoo.report import run_report

    here = pathlib.Path(sys.argv[1])

    def held(real):  # hold it until the test has sent its signal
        def held(*args, **kwargs):
            (here / "writing").touch()
            while not (here / "signalled").exists():
                time.sleep(0.05)
            time.sleep(0.5)  # the signal has landed, in the middle of it
            return real(*args, **kwargs)
        return held

    if sys.argv[3:] == ["detach"]:  # the monitor taking its hooks off, before it writes
        zoo.GradientMonitor.detach = held(zoo.GradientMonitor.detach)
    else:
        run_report.write_records = held(run_report.write_records)
    mlflow.set_tracking_uri(f"sqlite:///{here / 'mlflow.db'}")
    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with mlflow.start_run() as run:
        (here / "run_id").write_text(run.info.run_id)
        epochs = int(sys.argv[2])
        callbacks = [zoo.GradientMonitor(verbose=False)]
        if epochs > 100:  # a long fit, to be stopped in the middle
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: (here / "training").touch()))
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
    print("the script went on")
""")


def start(tmp_path, epochs, held="write_records"):
    (tmp_path / "script.py").write_text(SCRIPT)
    # Ctrl-C as in a terminal: a suite started in the background inherits SIGINT ignored
    return subprocess.Popen([sys.executable, str(tmp_path / "script.py"), str(tmp_path), str(epochs), held],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path, process, what):
    """Wait for ``path`` to appear (the child reached a point), failing if the child ends first."""
    deadline = time.monotonic() + 600  # generous: this is a bound on a hang, not a timing
    while not path.exists():
        assert process.poll() is None, f"the script ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after 600 s"
        time.sleep(0.05)


@pytest.mark.parametrize("held", ["write_records", "detach"])
def test_ctrl_c_while_the_monitor_writes_is_delivered_after_the_records(tmp_path, held):
    """While it writes, and from the end of fit on: a Ctrl-C landing in detach (where dropped
    train functions run weakref callbacks, in which Python ignores a KeyboardInterrupt) was lost."""
    process = start(tmp_path, epochs=2, held=held)
    wait_for(tmp_path / "writing", process, "the monitor's writing")
    process.send_signal(signal.SIGINT)
    (tmp_path / "signalled").touch()
    out, err = process.communicate(timeout=600)
    assert "the script went on" not in out and "KeyboardInterrupt" in err  # delivered, not lost
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run((tmp_path / "run_id").read_text())
    assert run.data.tags["zoo.verdict"] and run.data.tags["zoo.killed"] == "SIGINT"
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run.info.run_id, "stats")}
    assert artifacts == {"stats/gradient_stats.npz"}  # the records are whole


def test_a_run_left_running_by_sigterm_is_ended_by_zoo_runs_repair(tmp_path):
    process = start(tmp_path, epochs=10_000)
    wait_for(tmp_path / "training", process, "the first epoch")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGTERM
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = (tmp_path / "run_id").read_text()
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["zoo.owner.pid"] == str(process.pid)
    repaired = repair(uri)
    assert [o.run_id for o in repaired] == [run_id]
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_the_deferred_stop_raises_a_second_ctrl_c_at_once():
    from zoo.runtime import stopping
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a user's script has it
    with pytest.raises(KeyboardInterrupt):
        with stopping.deferred() as stops:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert stops == ["SIGINT"]
            os.kill(os.getpid(), signal.SIGINT)  # the second one raises here
            time.sleep(5)
            pytest.fail("the second Ctrl-C did not raise")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    signal.signal(signal.SIGINT, before)


def test_a_signal_the_process_ignores_stays_ignored_while_the_monitor_writes():
    """A script started in the background ignores SIGINT (the shell sets SIG_IGN): the monitor's
    held window must not catch it (two used to raise KeyboardInterrupt there); a process that
    takes SIGINT has it recorded and delivered after the window."""
    from zoo.runtime.stopping import deferred

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred() as stops:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        assert stops == [] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(KeyboardInterrupt):
            with deferred() as stops:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                assert stops == ["SIGINT"]  # recorded, not raised, inside the window
    finally:
        signal.signal(signal.SIGINT, previous)
