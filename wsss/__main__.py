"""Entry point for ``python -m wsss`` (and ``torchrun -m wsss``)."""
from wsss.cli.main import main

if __name__ == "__main__":
    main()
