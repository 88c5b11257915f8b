#!/usr/bin/env bash
# Install albumd with its test dependencies into .venv, lint, and run the test suite.
# Needs PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test` (ALBUMD_TEST_PG overrides).
source "$(dirname "$0")/env.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
