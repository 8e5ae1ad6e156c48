"""Offline-by-design defaults, applied in this process only, before ultralytics is first imported.

ultralytics reaches for the network in several places (DNS probe at import, font download, pip auto-install,
update and analytics checks). sdgas sets the switches that turn those off, points ultralytics' font lookup at
matplotlib's bundled font and switches integrations off in memory, so no mode ever makes a network attempt (see
tests/utils/test_offline.py) and `import sdgas` writes nothing to the user's configuration (no font copies, no settings).
"""

import os
from pathlib import Path

OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",  # no DNS probe at import, no update check, no events
    "YOLO_AUTOINSTALL": "False",  # never pip-install missing requirements
    "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
}


def set_offline_env():
    """Set the offline switches unless the user set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def local_font(font="Arial.ttf"):
    """ultralytics' `check_font` without its download: the font from ultralytics' config folder if the user has it,
    else matplotlib's DejaVuSans (bundled with matplotlib), which renders the same labels."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    user = Path(USER_CONFIG_DIR) / Path(font).name
    return user if user.exists() else Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def use_local_fonts():
    """Route ultralytics' font lookups (dataset check and plotting bind `check_font` by name) to `local_font`."""
    import ultralytics.data.utils
    import ultralytics.utils.plotting

    for module in (ultralytics.data.utils, ultralytics.utils.plotting):
        module.check_font = local_font


def disable_integrations():
    """Switch off settings that would sync or load network integrations, for this process only (ultralytics'
    SETTINGS.update would also write them to the user's settings file)."""
    from ultralytics.utils import SETTINGS

    wanted = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False, "raytune": False,
              "wandb": False, "neptune": False, "hub": False}
    for key, value in wanted.items():
        if key in SETTINGS:
            dict.__setitem__(SETTINGS, key, value)  # in memory; JSONDict.__setitem__ would save the file
