"""`python -m xlpo` is the `xlpo` command (also what `accelerate launch -m xlpo` runs)."""

from xlpo.cli import main

main()
