"""``python3 -m kexec_auto``: the kexec-auto command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
