"""A local E2B: an emulator of E2B's API (and, in its Docker mode, of its builds and sandboxes).

For the tests and benchmarks, and for anyone without an E2B account
(``e2b-matrix emulate``; docs/emulator.md says what it does not model). The
*real* ``e2b`` SDK and ``e2b-code-interpreter`` client talk to it through
``E2B_API_URL`` and ``E2B_SANDBOX_URL``. One module per job:

- ``api``: :class:`E2BEmulator`, its lifecycle and configuration, wiring the rest;
- ``store``: the team's templates, builds and tag assignments, under the one lock;
- ``build_routes``: request a build, upload its files, start it, follow its status;
- ``template_routes``: a template's tags, alias and deletion;
- ``sandbox_api``: create, connect to and kill sandboxes, their timeout;
- ``limit``: the team's concurrent-build limit;
- ``plans``: configured behaviours, step costs, and each build's plan (keys, costs);
- ``gateway``: injected faults, the request log, the API key check;
- ``router``: each HTTP request to its route handler, through the gateway;
- ``readings``: what a test or benchmark reads back (builds, steps, requests, sandboxes);
- ``timing``: the timing model of builds (step costs, E2B's layer cache, logs);
- ``rules``: E2B's rules it follows (routes, names, tags, references, limits, cache keys);
- ``http``: the HTTP/1.1 server both endpoints run on;
- ``docker_steps``: the Docker mode's step executor (each step run as E2B runs it, then finalize);
- ``step_commands``: the commands of those steps (RUN, COPY, ENV, WORKDIR, USER);
- ``docker_shell``: a build's commands in its containers, their output in its log;
- ``standin``: the images that stand for E2B's public templates in Docker mode;
- ``sandboxes``: the sandbox proxy (envd's process API, the code interpreter's /execute);
- ``serve``: ``e2b-matrix emulate``.

Importing this package loads the API and its timing model only (standard library);
the Docker mode loads when it is asked for.
"""

from e2b_matrix.emulator.api import (
    BUILD_LIMIT,
    ROUTES,
    BuildSnapshot,
    E2BEmulator,
    SandboxSnapshot,
    StepRecord,
    StepSpec,
)

__all__ = ["BUILD_LIMIT", "ROUTES", "BuildSnapshot", "E2BEmulator", "SandboxSnapshot", "StepRecord", "StepSpec"]
