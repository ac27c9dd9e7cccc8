"""Operations: one module per thing a user asks mlvs to do.

Importing this package names where each state-changing operation keeps how it is
finished or undone after a crash (`mlvs.state.interrupted.finisher_home`), so
that whichever command runs next can complete the one before it.
"""

from mlvs.state.interrupted import finisher_home

finisher_home("pipeline", "mlvs.ops.repair")
finisher_home("rollback", "mlvs.ops.rollback.restore")
finisher_home("snapshot", "mlvs.ops.snapshot.create")
