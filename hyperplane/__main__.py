"""``python -m hyperplane``: the command line, as the ``hyperplane`` script runs it."""

from hyperplane.cli.main import main

main()
