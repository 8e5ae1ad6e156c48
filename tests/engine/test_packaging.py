"""An installed wheel carries cfg/ (model and dataset YAMLs, demo data, the shipped weights) and finds YAMLs and the
shipped weights by bare name anywhere."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_cfg_and_resolves_yamls_by_name(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "wheel").glob("sdgas-*.whl"))
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel),
                              "-q"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    script = ("import sdgas, sdgas.utils as u; from sdgas.nn.tasks import SDGASDetectionModel; "
              "m = SDGASDetectionModel('sdgasnet.yaml', verbose=False); "
              "r = sdgas.SDGAS('sdgasnet-neu.pt').predict(str(u.DEMO_DATA.parent / 'neu-det-demo/images/val'), "
              "conf=0.1, verbose=False); print(sum(len(x.boxes) > 0 for x in r)); "
              "print(sdgas.__file__); print(u.MODELS_DIR); print(len(list(u.DEMO_DATA.parent.rglob('*.jpg'))))")
    env_path = f"{target}"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with_boxes, package_file, models_dir, demo_images = run.stdout.strip().splitlines()[-4:]
    assert package_file.startswith(str(target)) and models_dir == str(target / "sdgas" / "cfg" / "models")
    assert int(demo_images) == 48
    assert int(with_boxes) == 12  # the shipped weights, loaded from the wheel, find defects in every demo val image
    assert (target / "sdgas" / "cfg" / "weights" / "sdgasnet-neu.safetensors").is_file()
