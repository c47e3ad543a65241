"""Where the declarative experiment files live (``experiments/`` of the repository)."""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
SUITES_DIR = EXPERIMENTS_DIR / "suites"
SPECS_DIR = EXPERIMENTS_DIR / "specs"
METHODS_DIR = EXPERIMENTS_DIR / "methods"
PROFILES_FILE = EXPERIMENTS_DIR / "profiles.yaml"
PUBLISHED_FILE = EXPERIMENTS_DIR / "published" / "spn_tables.csv"
