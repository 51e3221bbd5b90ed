#!/usr/bin/env bash
# Optional fidelity checks against the real model code (torch + transformers), kept out of the
# default test run and CI. Creates a virtual environment outside the checkout (default
# /tmp/llmcalc-fidelity, or $FIDELITY_VENV), installs tests/fidelity/requirements.txt and llmcalc,
# then runs every test marked `fidelity`. Extra arguments go to pytest, e.g.
#   scripts/fidelity.sh tests/fidelity/test_fidelity_hf.py -k params
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FIDELITY_VENV:-/tmp/llmcalc-fidelity}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r tests/fidelity/requirements.txt
fi
"$venv/bin/pip" install --quiet -e ".[test]"
if [ $# -eq 0 ]; then set -- tests/fidelity; fi
exec "$venv/bin/python" -m pytest -m fidelity -p no:cacheprovider "$@"
