"""`mlvs serve`: the HTTP scoring service of the model an alias points at, following the alias.

`service` checks the arguments and runs it; `follow` holds the served model and swaps
it when the alias moves; `loader` loads and verifies one registered version; `app` is
the HTTP interface; `status` is the file through which `mlvs verify` learns of a
refused version.
"""
