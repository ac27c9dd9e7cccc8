"""One module per command, each loaded only when its command runs (see `mlvs.cli.app.COMMANDS`)."""
