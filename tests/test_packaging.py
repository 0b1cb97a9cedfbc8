"""A non-editable install works from any directory: conf/ ships inside the wheel."""
import os
import subprocess
import sys

import pytest

from conftest import EVENT_SECONDS, REPO


@pytest.mark.slow
def test_wheel_install_runs_from_another_directory(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(REPO)], check=True, timeout=300)
    wheel = next(wheels.glob("gradzoo-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=300)
    assert (site / "zoo" / "conf" / "config.yaml").is_file()
    assert (site / "zoo" / "conf" / "model" / "mlp.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import zoo; print(zoo.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))  # the wheel's copy, not the checkout
    script = site / "bin" / "zoo-train"
    assert script.is_file()
    out = subprocess.run([sys.executable, str(script), "trainer.epochs=1", "model.depth=3",
                          "tracking.uri=null"], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "zoo-train: finished after 23 steps" in out.stdout
    # the studies ship too: zoo-ablate lists them and composes one from the installed copy
    assert (site / "zoo" / "ablations" / "init_depth.yaml").is_file()
    listed = subprocess.run([sys.executable, str(site / "bin" / "zoo-ablate"), "--list"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert listed.returncode == 0 and "init_depth" in listed.stdout, listed.stderr[-2000:]
    study = subprocess.run([sys.executable, str(script), "-m", "--config-dir", str(site / "zoo" / "ablations"),
                            "--config-name", "input_scaling", "trainer.epochs=0"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=EVENT_SECONDS)
    # composed from the installed copy: its 10 jobs (2 variants x 5 seeds) checked before the first runs
    assert study.returncode == 2, study.stderr[-2000:]
    assert study.stderr.strip().endswith("(job 1 of 10: data.standardize=False seed=0 trainer.epochs=0)"), study.stderr
