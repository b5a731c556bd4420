"""What reaches the loop on its one queue: typed events from workers, the lock writer and signals."""

from __future__ import annotations

import attrs

from e2b_matrix.model import BuildSpec, Outcome, State
from e2b_matrix.verify import VerifyReport


@attrs.frozen
class Log:
    alias: str
    line: str  # the newest line of its build's log (the whole page is in its log file)


@attrs.frozen
class Published:
    alias: str
    depth: int  # the base and steps 1..depth are in the layer cache


@attrs.frozen
class Progress:
    alias: str
    state: State
    message: str = ""


@attrs.frozen
class Built:
    alias: str
    outcome: Outcome
    report: VerifyReport | None = None


@attrs.frozen
class Errored:
    alias: str
    error: BaseException


@attrs.frozen
class Landing:
    """A build that ended well, on its way into the lock."""

    spec: BuildSpec
    outcome: Outcome
    report: VerifyReport | None = None


@attrs.frozen
class Landed:
    batch: tuple[Landing, ...]
    errors: dict[str, str]  # alias -> why its build failed after all (not recorded, not promoted)


@attrs.frozen
class Stop:
    reason: str
    interrupted: bool = False


Event = Log | Published | Progress | Built | Errored | Landed | Stop
