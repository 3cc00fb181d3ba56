"""`python -m superpos ...` (and `torchrun ... -m superpos run ...`) works like the `superpos` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
