"""Offline-by-design defaults, applied before ultralytics is first imported.

ultralytics reaches for the network in several places (DNS probe at import, font download, pip auto-install,
update and analytics checks). sdgas sets the switches that turn those off and ships the plot font locally, so no
mode ever makes a network attempt (see tests/test_offline.py).
"""

import os
import shutil
from pathlib import Path

OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",  # no DNS probe at import, no update check, no events
    "YOLO_AUTOINSTALL": "False",  # never pip-install missing requirements
    "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
}
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # the names ultralytics' check_font() looks for


def set_offline_env():
    """Set the offline switches unless the user set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def provide_local_fonts(config_dir: Path):
    """Put matplotlib's DejaVuSans under the names ultralytics looks for, so plots never trigger a font download."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONT_NAMES:
        target = config_dir / name
        if not target.exists() and source.exists():
            config_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def disable_integrations():
    """Switch off settings that would sync or load network integrations."""
    from ultralytics.utils import SETTINGS

    wanted = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False, "raytune": False,
              "wandb": False, "neptune": False, "hub": False}
    changes = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
    if changes:
        SETTINGS.update(changes)
