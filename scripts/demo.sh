#!/usr/bin/env bash
# `make demo`: see services/dev/demo.py. The venv is made by the Makefile before this runs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m services.dev.demo
