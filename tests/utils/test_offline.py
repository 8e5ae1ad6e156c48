"""sdgas makes zero network attempts in train, val, predict and export (audit hook on socket and process events)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# local hardware probes, no network: ctypes.util.find_library runs `ldconfig -p`; ultralytics' is_intel() `xpu-smi`
LOCAL_PROBES = {"/sbin/ldconfig", "ldconfig", "xpu-smi"}

SCRIPT = textwrap.dedent("""
    import json, sys
    events = []
    WATCHED = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "urllib.Request", "http.client")
    def hook(event, args):
        if event.startswith(WATCHED):
            events.append([event, repr(args)[:200]])
    sys.addaudithook(hook)

    from sdgas import SDGAS
    model = SDGAS("sdgasnet.yaml")
    model.train(epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=sys.argv[1], name="offline", plots=True)
    best = str(model.trainer.best)
    SDGAS(best).val(imgsz=64, batch=8, workers=0, device="cpu", plots=True)
    SDGAS(best).predict(imgsz=64, save=True, project=sys.argv[1], name="predict")
    SDGAS(best).export(format="onnx", imgsz=64)
    print("EVENTS " + json.dumps(events))
""")


@pytest.mark.slow  # trains a model
def test_no_network_attempt_in_any_mode(tmp_path):
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config")}  # a fresh config: fonts, settings made anew
    for key in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL"):
        env.pop(key, None)  # sdgas must set these itself
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "runs")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("EVENTS "))
    events = json.loads(line[len("EVENTS "):])
    network = [e for e in events if not e[0].startswith(("subprocess", "os."))]
    assert network == [], f"network attempts: {network}"
    processes = [e for e in events if e[0].startswith(("subprocess", "os.")) and e[1].split("'")[1] not in LOCAL_PROBES]
    assert processes == [], f"processes started (pip install, git, download tools?): {processes}"
    assert list((tmp_path / "runs" / "predict").glob("*.jpg")), "prediction images not saved"
    assert list((tmp_path / "runs" / "offline").glob("*.png")), "training plots not rendered"
    assert not list((tmp_path / "config").rglob("Arial*.ttf")), "fonts written into the user's config folder"


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_sdgas_writes_nothing_and_changes_no_setting(tmp_path):
    """With a fresh YOLO_CONFIG_DIR that ultralytics has initialised, `import sdgas` (and its first plot of labels)
    leaves every file there as it was, the settings file included; integrations are still off in that process."""
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config"), "YOLO_OFFLINE": "1"}
    init = subprocess.run([sys.executable, "-c", "import ultralytics"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]
    before = snapshot(tmp_path / "config")
    assert any(name.endswith("settings.json") for name in before)
    probe = ("import sdgas, numpy as np; from ultralytics.utils import SETTINGS; "
             "from ultralytics.utils.plotting import Annotator; "
             "Annotator(np.zeros((64, 64, 3), np.uint8), pil=True).box_label([4, 4, 40, 40], 'crazing'); "
             "print(SETTINGS['sync'], SETTINGS['mlflow'])")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "False"]
    assert snapshot(tmp_path / "config") == before
