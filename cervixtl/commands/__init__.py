"""Sub-commands of the ``cervixtl`` CLI: one module per command (or command group), each with
``register(subparsers)``; the optional module constant ``ORDER`` sorts them in ``--help``."""
