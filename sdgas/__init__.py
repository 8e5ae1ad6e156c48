"""sdgas: SD-GASNet surface-defect detection on top of ultralytics."""

__version__ = "0.1.0"

from sdgas.utils.offline import set_offline_env

set_offline_env()  # must run before ultralytics is imported anywhere

from sdgas.utils.offline import disable_integrations, use_local_fonts  # noqa: E402

use_local_fonts()
disable_integrations()

from sdgas.io.checkpoint import install_safe_loading  # noqa: E402

install_safe_loading()  # every ultralytics .pt load goes through sdgas' allow-list

from sdgas.engine.model import SDGAS  # noqa: E402

__all__ = ["SDGAS", "__version__"]
