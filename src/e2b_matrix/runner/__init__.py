"""The runner: builds a plan's jobs concurrently at the team's limit, sharing each distinct step once.

- jobs.py: jobs, parents first; who computes each shared prefix (share_gates);
- policy.py: the rules, pure: may a job start now (decide), what an error means (after_error);
- aliases.py: the alias flocks a run holds, across processes;
- worker.py: one build (and verify) in a pool thread, told back as events;
- writer.py: the lock writer (group commit), beside the loop;
- scheduler.py: the loop (Scheduler.run -> RunOutcome): a Run's state, what starts (Starter), how jobs end (Ledger).
"""

from e2b_matrix.runner.aliases import alias_lock_file
from e2b_matrix.runner.jobs import Job, make_jobs, share_gates
from e2b_matrix.runner.policy import Window
from e2b_matrix.runner.scheduler import RunOutcome, Scheduler

__all__ = ["Job", "RunOutcome", "Scheduler", "Window", "alias_lock_file", "make_jobs", "share_gates"]
