"""sdgas makes zero network attempts in train, val, predict and export (audit hook on socket and process events)."""

import json
import os
import subprocess
import sys
import textwrap

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
    assert (tmp_path / "config" / "Ultralytics" / "Arial.ttf").is_file() or \
        list((tmp_path / "config").rglob("Arial.ttf")), "local font not provided"
