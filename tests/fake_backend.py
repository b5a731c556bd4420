"""A tiny backend for tests: everything a backend owns, in one module (see test_backends.py).

Its "builds" are records in memory; its channels a dict. Nothing else in
e2b-matrix knows it exists: the test adds one line to the registry.
"""

from __future__ import annotations

import json
import uuid

from e2b_matrix.backends import ChannelState, Option, Registered
from e2b_matrix.model import Base, Outcome
from e2b_matrix.render import instructions
from e2b_matrix.verify import CheckResult, VerifyReport

BUILT: dict[str, dict] = {}  # build ID -> {"alias", "flavour", "steps"}
CHANNELS: dict[tuple[str, str], str] = {}  # (alias, channel) -> build ID

# its registry line: the test puts it in backends.REGISTRY["fake"]
REGISTERED = Registered(
    "fake_backend:FakeBackend",
    lock_file="templates.fake.lock",
    regenerate="make build-all BACKEND=fake",
    render_format="fake-json",
    options=(Option("--fake-flavour", "flavour", "How the fake builds taste."),),
)


class FakeBackend:
    name = "fake"
    lock_file = REGISTERED.lock_file
    regenerate = REGISTERED.regenerate
    render_format = REGISTERED.render_format
    options = REGISTERED.options

    def __init__(self, settings, flavour: str = "plain"):
        self.flavour = flavour

    def base(self, params) -> Base:
        return Base("image", f"fake/{params['image']}", params["image_python"])

    def files(self):
        return (("fake/flavour", self.flavour),)

    def runs(self, check) -> bool:
        return not check.stateful

    def render(self, spec) -> str:
        return json.dumps({"from": spec.base.ref, "steps": instructions(spec.steps)}, indent=1) + "\n"

    def check(self) -> None:
        pass

    def staleness(self, entry):
        return self.gone(entry, entry.build_id)

    def gone(self, entry, build_id):
        return None if build_id in BUILT else f"fake build {build_id} is gone"

    def shares_in_flight(self) -> bool:
        return True

    def build(self, spec, *, force, log, cancel, progress=None) -> Outcome:
        build_id = uuid.uuid4().hex
        BUILT[build_id] = {"alias": spec.alias, "flavour": self.flavour, "steps": len(spec.steps)}
        log([f"fake build {build_id}"])
        return Outcome(template_id=f"fake-{spec.alias}", build_id=build_id)

    def verify(self, spec, built):
        return VerifyReport(CheckResult(c.name, c.layer, True, "fake") for c in spec.checks if self.runs(c))

    def reference(self, entry) -> str:
        return f"fake://{entry.alias}@{entry.build_id}"

    def channel_reference(self, entry, channel: str) -> str:
        return f"fake://{entry.alias}:{channel}"

    def point(self, entry, channel: str, build_id: str) -> None:
        CHANNELS[(entry.alias, channel)] = build_id

    def leftovers(self, lock, defined):
        return []

    def remove(self, ref):
        return None

    def channels(self, entry):
        return [ChannelState(ch, bid) for (alias, ch), bid in CHANNELS.items() if alias == entry.alias], None
