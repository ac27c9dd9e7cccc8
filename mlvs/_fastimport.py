"""Keep a 2.7 s import out of every process that touches notebooks.

jsonschema (under nbformat, papermill, nbconvert and nbval) imports
rfc3987_syntax when it is installed, which compiles a Lark grammar on every
import, for an IRI format check none of those tools uses. Marking the module
absent makes jsonschema skip that one format checker.

Only mlvs's own processes do this: the command line imports it first
(`mlvs.cli`), and pytest loads it before nbval's plugin (`-p mlvs._fastimport`).
`import mlvs` does not, so that a user's kernel keeps every library it has.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
