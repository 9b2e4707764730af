#!/usr/bin/env python3
"""Lints and renders charts/appservicelink offline with a real Helm engine (no cluster, no helm binary).

    python3 .ci/chart.py lint                       # every scenario below; exit 1 on any warning or error
    python3 .ci/chart.py render [--values-json '{...}'] [--name R] [--namespace NS]
                                                    # rendered manifests as multi-document YAML on stdout

Two PyPI packages embed Helm v4 as a shared library (install: .ci/requirements.txt):
- helm-sdkpy (Helm 4.3): its `Lint` is used on the chart as shipped. It cannot render offline: its
  install/upgrade need a reachable cluster and expose no dry-run or template, and its lint reports
  drop the error text (only severity and path survive).
- helm-python-sdk (Helm 4.2): renders templates offline (`Chart.render`, values.schema.json enforced)
  and lints with any values, with readable messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

CHART = Path(__file__).resolve().parent.parent / "charts" / "appservicelink"
KUBE_VERSION = "v1.32.0"

# Values the lint step checks the chart with, besides the defaults.
SCENARIOS: dict[str, dict] = {
    "defaults": {},
    "workload-identity": {
        "azure": {
            "credential": "workload-identity",
            "workloadIdentity": {
                "clientId": "11111111-2222-3333-4444-555555555555",
                "tenantId": "66666666-7777-8888-9999-000000000000",
            },
        }
    },
    "client-secret": {
        "azure": {
            "credential": "client-secret",
            "clientSecret": {
                "existingSecret": "asl-sp",
                "clientId": "11111111-2222-3333-4444-555555555555",
                "tenantId": "66666666-7777-8888-9999-000000000000",
            },
        }
    },
    "managed-identity": {
        "azure": {
            "credential": "managed-identity",
            "managedIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"},
        }
    },
    "monitoring-and-network-policy": {
        "metricsService": {"enabled": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
    },
    "dry-run-single-replica": {
        "dryRun": True,
        "replicaCount": 1,
        "leaderElection": {"enabled": False},
        "azure": {"caBundle": {"configMapName": "azure-ca"}, "authorityHost": "https://login.example.test/"},
    },
}


def _die(message: str) -> None:
    print(f"chart.py: {message}", file=sys.stderr)
    sys.exit(1)


def _import_helm_python():
    try:
        import helm_python  # type: ignore[import-not-found]
    except ImportError:
        _die(
            "helm-python-sdk is not installed: pip install --ignore-requires-python -r .ci/requirements.txt"
        )
    return helm_python


def render(values: dict, name: str, namespace: str) -> str:
    helm = _import_helm_python()
    chart = helm.Chart.load(str(CHART))
    try:
        manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        _die(f"render failed: {e}")
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        text = manifests[path].strip()
        if text:
            docs.append(f"# Source: {path}\n{text}\n")
    return "---\n".join(docs)


def notes(values: dict, name: str, namespace: str) -> str:
    helm = _import_helm_python()
    manifests = helm.Chart.load(str(CHART)).render(values, name=name, namespace=namespace, is_install=True)
    return next((v for k, v in manifests.items() if k.endswith("NOTES.txt")), "")


def lint_sdkpy() -> list[str]:
    """helm-sdkpy's Lint on the chart with its own values.yaml; its messages carry no text."""
    try:
        import helm_sdkpy  # type: ignore[import-not-found]
    except ImportError:
        _die("helm-sdkpy is not installed: pip install --ignore-requires-python -r .ci/requirements.txt")
    # Lint contacts no cluster, but the configuration wants a kubeconfig path; an empty one will do.
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = os.path.join(tmp, "kubeconfig")
        Path(kubeconfig).write_text("apiVersion: v1\nkind: Config\n")
        config = helm_sdkpy.Configuration(namespace="appservicelink-system", kubeconfig=kubeconfig)
        report = asyncio.run(helm_sdkpy.Lint(config).run(str(CHART)))
    problems = [
        f"helm-sdkpy {helm_sdkpy.get_version()}: severity {m['Severity']} in {m['Path']}"
        for m in report.get("Messages") or []
        if m["Severity"] >= 2
    ]
    print(f"helm-sdkpy lint ({helm_sdkpy.get_version()}): {len(problems)} warning(s) or error(s)")
    return problems


def lint_scenarios() -> list[str]:
    helm = _import_helm_python()
    problems = []
    for scenario, values in SCENARIOS.items():
        report = helm.lint(str(CHART), values, strict=True, namespace="appservicelink-system", kube_version=KUBE_VERSION)
        found = [m for m in report.get("messages") or [] if m["severity"] >= 2]
        print(f"helm-python-sdk lint --strict ({helm.helm_sdk_version()}), {scenario}: {len(found)} problem(s)")
        problems += [f"{scenario}: {m['path']}: {m['error']}" for m in found]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lint")
    for command in ("render", "notes"):
        p = sub.add_parser(command)
        p.add_argument("--values-json", default="{}", help="values as JSON, merged over values.yaml")
        p.add_argument("--scenario", choices=sorted(SCENARIOS), help="one of the lint scenarios' values")
        p.add_argument("--name", default="appservicelink")
        p.add_argument("--namespace", default="appservicelink-system")
    args = parser.parse_args()
    if args.command == "lint":
        problems = lint_sdkpy() + lint_scenarios()
        for p in problems:
            print(f"LINT: {p}", file=sys.stderr)
        if problems:
            _die(f"{len(problems)} lint problem(s)")
        print("chart lint: ok")
        return
    values = SCENARIOS[args.scenario] if args.scenario else json.loads(args.values_json)
    out = (render if args.command == "render" else notes)(values, args.name, args.namespace)
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
