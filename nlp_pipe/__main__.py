"""`python -m nlp_pipe` (so `accelerate launch -m nlp_pipe ...` works)."""

from .cli import main

main()
