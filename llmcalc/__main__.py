"""`python -m llmcalc` runs the same command line as the `llmcalc` script."""

from .cli import main

main()
