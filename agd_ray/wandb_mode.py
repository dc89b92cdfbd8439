"""Which W&B mode a config means here: ``auto`` is online when credentials exist
(``WANDB_API_KEY`` or a netrc entry for the W&B host), else offline. Shared by the
per-trial logger and the report's W&B publishing."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse


def resolve_mode(cfg) -> str:
    """auto -> online with credentials, else offline; other modes as given."""
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    return "online" if has_credentials() else "offline"


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
