"""`python -m sdgen` (also what `accelerate launch -m sdgen` runs)."""

from sdgen.cli import main

if __name__ == "__main__":
    main()
