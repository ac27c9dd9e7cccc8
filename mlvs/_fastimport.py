"""Keep a 2.7 s import out of every process that touches notebooks.

jsonschema (under nbformat, papermill, nbconvert and nbval) imports
rfc3987_syntax when it is installed, which compiles a Lark grammar on every
import, for an IRI format check none of those tools uses. Marking the module
absent makes jsonschema skip that one format checker. Imported by `mlvs` and
loaded first by pytest (`-p mlvs._fastimport`), before nbval's plugin.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
