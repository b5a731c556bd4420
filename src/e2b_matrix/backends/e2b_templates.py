"""What exists on E2B, apart from building it: a build's presence, the tags of a template (channels),
and deleting a whole template (prune).

Channels are E2B tags, moved with ``Template.assign_tags`` and read with
``Template.get_tags``. E2B has no per-build delete: ``Template.delete`` removes
a whole template, and E2B refuses it while sandboxes of it run or are paused
(e2b-dev/infra packages/api/internal/handlers/template_delete.go). The SDK is
imported in each method (importing it costs about a second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from e2b_matrix.backends import ChannelState
from e2b_matrix.backends.e2b_sdk import classify, gone
from e2b_matrix.errors import BuildError
from e2b_matrix.model import Removal

if TYPE_CHECKING:
    from e2b.connection_config import ApiParams

    from e2b_matrix.lock import TemplateLock
    from e2b_matrix.lock.model import LockEntry


@attrs.frozen
class E2BTemplates:
    """The templates on E2B that ``api()`` (the connection options, its key among them) reaches."""

    api: Callable[[], ApiParams]

    def point(self, entry: LockEntry, channel: str, build_id: str) -> None:
        """Tag build ``build_id`` of the entry's alias as ``channel``."""
        from e2b import Template

        with classify():
            Template.assign_tags(f"{entry.alias}:{build_id}", [channel], **self.api())

    def gone(self, entry: LockEntry, build_id: str) -> str | None:
        """Why build ``build_id`` of the entry's template cannot run (E2B no longer has it, or it is not
        ready), or None: it is there. One status request; any other error is raised as it is."""
        from e2b import Template
        from e2b.template.types import BuildInfo, TemplateBuildStatus

        try:
            with classify():
                status = Template.get_build_status(
                    BuildInfo(entry.template_id, build_id, entry.alias, entry.alias), logs_offset=0, **self.api()
                )
        except BuildError as exc:
            what = gone(exc)
            if what is None:
                raise
            return f"{what} {entry.template_id if what == 'template' else build_id} is gone from E2B"
        if status.status != TemplateBuildStatus.READY:
            return f"build {build_id} is {status.status.value} on E2B, not ready"
        return None

    def channels(self, entry: LockEntry) -> tuple[list[ChannelState], str | None]:
        """Where E2B's tags of the alias point, and whether the pinned build is gone."""
        from e2b import Template

        try:
            with classify():
                tags = Template.get_tags(entry.template_id, **self.api())
        except BuildError as exc:
            if gone(exc) == "template":
                return [], f"template {entry.template_id} is gone"
            raise
        return [ChannelState(t.tag, t.build_id) for t in tags], self.gone(entry, entry.build_id)

    def leftovers(self, lock: TemplateLock, defined: set[str]) -> list[Removal]:
        """The templates of aliases the lock records whose variant is gone from variants/ (no request:
        the lock says). E2B deletes only whole templates; a template of a defined variant keeps
        every build, since its history's may be rollback targets."""
        return [
            Removal(
                "e2b template",
                f"{e.alias} ({e.template_id})",
                f"its variant {e.variant} is gone from variants/",
                ref=e.template_id,
                alias=e.alias,
            )
            for e in lock
            if e.alias not in defined
        ]

    def remove(self, ref: str) -> str | None:
        """Delete template ``ref`` on E2B; None when it is gone (or was), else E2B's reason (it refuses
        while sandboxes of it run or are paused)."""
        from e2b import Template

        try:
            with classify():
                Template.delete(ref, **self.api())  # False (404): gone already. Since e2b 2.64 (the floor)
        except BuildError as exc:
            return str(exc)
        return None
