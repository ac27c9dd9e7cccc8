"""Keep slow start-up work out of mlvs's own processes.

pydantic looks for plugins through every installed distribution's entry points the
first time a model validates (63 ms of a 0.5 s command, measured on a no-op
snapshot); mlvs uses none, and says so with pydantic's own switch. The switch is an
environment variable, so the processes mlvs starts (its notebooks' kernels too) inherit
it; a caller who sets it keeps their own value.

jsonschema (under nbformat, papermill, nbconvert and nbval) imports
rfc3987_syntax when it is installed, which compiles a Lark grammar on every
import, for an IRI format check none of those tools uses. Marking the module
absent makes jsonschema skip that one format checker.

Only mlvs's own processes do this: the command line imports it first
(`mlvs.cli`), and pytest loads it before nbval's plugin (`-p mlvs._fastimport`).
`import mlvs` does not, so that a user's kernel keeps every library it has.
"""

import os
import sys

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
