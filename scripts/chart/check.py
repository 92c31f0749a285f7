#!/usr/bin/env python3
"""Checks behind scripts/chart-check.sh: one subcommand per check.

Runs in the virtualenv chart-check.sh creates (PyYAML, jsonschema,
kubernetes-validate). Each subcommand prints what is wrong and exits 1, or
exits 0; lines starting with "note:" or "skip:" are shown by chart-check.sh
even when the check passes.

  dockerfile-build DOCKERFILE MAKEFILE     the image builds what the tests run
  dockerfile-runtime DOCKERFILE            runtime stage: base, user, entrypoint, libraries
  binaries DOCKERFILE CHART                binaries the chart runs = binaries the image has, all workspace binaries
  values-consistency CHART                 values.yaml documented, values.yaml and values.schema.json agree
  validate MANIFESTS K8S_VERSION...        Kubernetes schemas; CRD subsets for custom resources
  conventions MANIFESTS                    labels, security context, probes, grace period, identity, secrets
  replicas MANIFESTS KIND N                the worker workload is a KIND with N replicas
  grace MANIFESTS SECONDS                  every Shoal pod has that terminationGracePeriodSeconds
  expect NAME MANIFESTS                    what the example NAME must render
  shoal-config MANIFESTS BIN_DIR           the real binaries accept the rendered config (--print-config)
  dashboard JSON COPY [ROOT]               the Grafana dashboard: parses, templated data source, metrics the binaries register
  dashboard-configmap MANIFESTS JSON absent|present [NAMESPACE [label:K=V|annotation:K=V ...]]
                                           the dashboard's ConfigMap, as the values ask

The checks live next to this file, one module per concern:
dockerfile_checks, values_checks (with values_doc), schema_checks,
render_checks, example_checks, config_checks, dashboard_checks; manifests holds what they
share.
"""

from __future__ import annotations

import sys

# The modules beside this file are imported from the work tree: leave no
# __pycache__ there.
sys.dont_write_bytecode = True

from config_checks import cmd_shoal_config  # noqa: E402
from dashboard_checks import cmd_dashboard, cmd_dashboard_configmap  # noqa: E402
from dockerfile_checks import cmd_binaries, cmd_dockerfile_build, cmd_dockerfile_runtime  # noqa: E402
from example_checks import cmd_expect  # noqa: E402
from render_checks import cmd_conventions, cmd_grace, cmd_replicas  # noqa: E402
from schema_checks import cmd_validate  # noqa: E402
from values_checks import cmd_values_consistency  # noqa: E402

COMMANDS = {
    "dockerfile-build": cmd_dockerfile_build,
    "dockerfile-runtime": cmd_dockerfile_runtime,
    "binaries": cmd_binaries,
    "values-consistency": cmd_values_consistency,
    "validate": cmd_validate,
    "conventions": cmd_conventions,
    "replicas": cmd_replicas,
    "grace": cmd_grace,
    "expect": cmd_expect,
    "shoal-config": cmd_shoal_config,
    "dashboard": cmd_dashboard,
    "dashboard-configmap": cmd_dashboard_configmap,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
