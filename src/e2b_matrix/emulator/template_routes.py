"""E2B's routes about a template as a whole: its tags, its alias, its deletion.

As E2B's API answers them (repository e2b-dev/infra, packages/api/internal/handlers:
template_tags.go, template_alias.go, template_delete.go): tags are rows pointing at a
build (:class:`~e2b_matrix.emulator.store.Assignment`), assigned to the build a
reference resolves to and deleted by name; a public template's tags are not the
team's to read or change (403). Every route runs under the store's lock at one
instant ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2b_matrix.emulator.rules import DEFAULT_TAG, Reply, iso, json_bytes, parse_reference, validate_tags
from e2b_matrix.emulator.store import Assignment, Store


class TemplateRoutes:
    """Tags, aliases and deletion over the store; ``in_use`` says whether a template has running sandboxes."""

    def __init__(self, store: Store, in_use: Callable[[str], bool]) -> None:
        self._store, self._in_use = store, in_use

    def assign_tags(self, req: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /templates/tags {target, tags}: point ``tags`` at the build ``target`` resolves to."""
        tags, target = req.get("tags"), req.get("target")
        if not isinstance(tags, list) or not isinstance(target, str):
            raise Reply(400, "Invalid request body: target and tags are required")
        if not tags:
            raise Reply(400, "At least one tag is required")
        identifier, tag = parse_reference(target, "Invalid target template format")
        template_id = self._store.template_of(identifier)
        build_id = self._store.resolve(template_id, tag, now)
        if build_id is None:
            raise Reply(404, f"Template '{target}' with tag '{tag or DEFAULT_TAG}' not found")
        self._store.owned(identifier)
        valid = validate_tags(tags)
        self._store.assignments.extend(Assignment(template_id, build_id, t, now) for t in valid)
        return 201, json_bytes({"tags": valid, "buildID": build_id})

    def remove_tags(self, req: dict[str, Any]) -> tuple[int, bytes]:
        """DELETE /templates/tags {name, tags}: delete every assignment of ``tags``."""
        tags, name = req.get("tags"), req.get("name")
        if not isinstance(tags, list) or not isinstance(name, str):
            raise Reply(400, "Invalid request body: name and tags are required")
        valid = validate_tags(tags)
        if not valid:
            raise Reply(400, "At least one tag is required")
        if DEFAULT_TAG in valid:
            raise Reply(400, f"Cannot delete the '{DEFAULT_TAG}' tag")
        identifier, tag = parse_reference(name, "Invalid template name format")
        if tag is not None:
            raise Reply(400, "Template name should not contain a tag, use the 'tags' field instead")
        template_id = self._store.owned(identifier)
        self._store.assignments = [
            a for a in self._store.assignments if not (a.template_id == template_id and a.tag in valid)
        ]
        return 204, b""

    def get_tags(self, reference: str) -> tuple[int, bytes]:
        """GET /templates/{id or name}/tags: the newest assignment of each tag, by tag."""
        identifier, _ = parse_reference(reference, "Invalid template reference")
        template_id = self._store.owned(identifier)
        newest: dict[str, Assignment] = {}
        for a in self._store.assignments:
            if a.template_id == template_id:
                newest[a.tag] = a
        return 200, json_bytes(
            [
                {"tag": a.tag, "buildID": a.build_id, "createdAt": iso(a.created + self._store.epoch)}
                for a in sorted(newest.values(), key=lambda a: a.tag)
            ]
        )

    def alias(self, alias: str, now: float) -> tuple[int, bytes]:
        """GET /templates/aliases/{alias}: the template a name (or ID) stands for; with a
        tag, only if the tag resolves to a ready build."""
        identifier, tag = parse_reference(alias, "Invalid alias format")
        template_id = self._store.template_of(identifier)
        if template_id in self._store.public_builds:
            raise Reply(403, "You don't have access to this template alias")
        if ":" in alias and self._store.resolve(template_id, tag, now) is None:
            raise Reply(404, f"tag '{tag or DEFAULT_TAG}' does not exist for template '{identifier}'")
        return 200, json_bytes({"templateID": template_id, "public": False})

    def delete_template(self, identifier: str) -> tuple[int, bytes]:
        """DELETE /templates/{id}: the whole template, its builds and tags (E2B has no per-build delete);
        refused (400) while a sandbox of it runs (e2b-dev/infra packages/api/internal/handlers/
        template_delete.go). Its ID is never built again: a new build of the name makes a new template."""
        template_id = self._store.owned(identifier)
        if self._in_use(template_id):
            raise Reply(400, f"cannot delete template '{identifier}' because there are running sandboxes using it")
        self._store.delete(template_id)
        return 204, b""
