"""Operations: one module per thing a user asks mlvs to do.

Importing this package registers how each state-changing operation is finished
or undone after a crash (`mlvs.state.interrupted.finisher`), so that whichever
command runs next can complete the one before it.
"""

from mlvs.ops import repair as _repair  # noqa: F401  (registers the pipeline's finisher)
from mlvs.ops.rollback import restore as _rollback  # noqa: F401  (registers its finisher)
from mlvs.ops.snapshot import create as _snapshot  # noqa: F401  (registers its finisher)
