#!/usr/bin/env bash
# The project's style checks, as CI runs them: ruff (lint and format, configured in pyproject.toml) on the
# Python, clang-format (.clang-format) on the plugin's C++ and CUDA. Needs the dev extra (pip install -e .[dev]).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
git ls-files -z --cached --others --exclude-standard -- '*.cpp' '*.h' '*.cu' '*.cuh' \
    | xargs -0 --no-run-if-empty clang-format --dry-run --Werror
echo "style: ruff and clang-format clean"
