"""Where the repository's own files are: migrations, broker configs, catalogues, the default state folder."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_DIR = REPO_ROOT / "infra"
MIGRATIONS_DIR = INFRA_DIR / "db"
DEFAULT_STATE_DIR = REPO_ROOT / ".state"
LOCAL_SECRETS_FILE = DEFAULT_STATE_DIR / "secrets.env"
