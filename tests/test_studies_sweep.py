"""``zoo-train -m`` over a study file: a bad check stops the sweep before its first job."""
import shutil
import subprocess
import sys


def test_a_study_sweep_with_a_bad_check_stops_before_any_job(tmp_path):
    from zoo.studies.load import studies_dir

    shutil.copy(studies_dir() / "pretraining.yaml", tmp_path / "bad_study.yaml")
    text = (tmp_path / "bad_study.yaml").read_text().replace("name: pretraining", "name: bad_study")
    (tmp_path / "bad_study.yaml").write_text(text.replace("variant: {pretrain.epochs: 20}", "variant: {pretrain.epochs: 5}", 1))
    out = subprocess.run([sys.executable, "-m", "zoo.cli.train", "-m", "--config-dir", str(tmp_path),
                          "--config-name", "bad_study", "tracking.uri=null"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"zoo-train: study error: {tmp_path / 'bad_study.yaml'}: study.claim: claim check 0: variant " in out.stderr
    assert "Launching" not in out.stdout + out.stderr and not (tmp_path / "multirun").exists()
