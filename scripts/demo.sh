#!/usr/bin/env bash
# Install albumd into .venv and run its built-in demo: the whole daemon, once, on a sample album.
source "$(dirname "$0")/env.sh"
albumd demo "$@"
