"""Deployment files parse, name every service, and validate offline against the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
CONFIG = K8S / "feedserve.toml"  # the configuration file compose and k8s share


def _resources() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


class TestCompose:
    def test_compose_names_every_service_and_shares_ipc(self) -> None:
        """One container per service; the colocated ones join the paramserver's IPC namespace for the rings."""
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
        services = compose["services"]
        assert {"paramserver", "ranker", "gateway"} <= set(services)
        assert services["paramserver"]["ipc"] == "shareable"
        assert services["ranker"]["ipc"] == services["gateway"]["ipc"] == "service:paramserver"
        assert "50051:50051" in services["gateway"]["ports"]

    def test_each_compose_service_runs_as_its_own_user_with_only_its_own_certificate(self) -> None:
        """The four services run as distinct non-root users of one group, each mounting the data volume, its
        own certificate volume and the shared configuration file read-only; the CA key and the admin key (the
        `secrets` volume) are mounted by the bootstrap alone, which hands each service its files
        (deploy/compose/bootstrap.sh) and exits."""
        services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
        users = {}
        for name in ("paramserver", "ranker", "generator", "gateway"):
            service = services[name]
            uid, gid = service["user"].split(":")
            users[name] = int(uid)
            assert int(uid) >= 10000 and gid == "10000"
            assert sorted(service["volumes"]) == sorted(["data:/data", f"tls-{name}:/tls:ro",
                                                         "./deploy/k8s/feedserve.toml:/etc/feedserve/feedserve.toml:ro"])
            assert {k: v for k, v in service["environment"].items() if k.startswith("FEEDSERVE_TLS")} == {
                "FEEDSERVE_TLS_CA": "/tls/ca.pem", "FEEDSERVE_TLS_CERT": "/tls/cert.pem", "FEEDSERVE_TLS_KEY": "/tls/key.pem"}
            assert "ALL" in service["cap_drop"]
        assert len(set(users.values())) == 4
        # the ring servers widen their segments to the group, for the colocated gateway
        assert services["paramserver"]["environment"]["FEEDSERVE_RING_GROUP"] == "1"
        assert services["ranker"]["environment"]["FEEDSERVE_RING_GROUP"] == "1"
        mounting_secrets = [n for n, s in services.items() if any(v.startswith("secrets:") for v in s.get("volumes", []))]
        assert mounting_secrets == ["bootstrap"]
        assert services["bootstrap"]["environment"]["FEEDSERVE_SECRETS"] == "/secrets"
        script = (ROOT / "deploy" / "compose" / "bootstrap.sh").read_text()
        assert services["bootstrap"]["entrypoint"][-1] == "/app/deploy/compose/bootstrap.sh"
        for name, uid in users.items():
            assert f"{name}:{uid}" in script  # its files go to its user
        assert "keys.db" not in script and "--keys" not in services["gateway"]["command"]  # keys: in the store


class TestKubernetes:
    def test_kustomization_lists_every_manifest(self) -> None:
        listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
        assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}

    @pytest.mark.parametrize("resource", _resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
    def test_manifest_validates_against_the_schema(self, resource: dict) -> None:
        """Strict validation: unknown fields or wrong types fail."""
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)

    def test_shapes_match_the_design(self) -> None:
        """Gateway, ranker, generator are Deployments; paramserver a StatefulSet; Services are headless; probes check
        gRPC health over mutual TLS (feedserve health), with each service's certificate mounted from a Secret."""
        kinds = {(r["kind"], r["metadata"]["name"]) for r in _resources()}
        assert {("Deployment", n) for n in ("gateway", "ranker", "generator")} <= kinds
        assert ("StatefulSet", "paramserver") in kinds
        for resource in _resources():
            if resource["kind"] == "Service":
                assert resource["spec"]["clusterIP"] == "None"
            if resource["kind"] in ("Deployment", "StatefulSet"):
                spec = resource["spec"]["template"]["spec"]
                secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
                for container in spec["containers"]:
                    assert container["readinessProbe"]["exec"]["command"][:2] == ["feedserve", "health"]
                    env = {e["name"]: e.get("value") for e in container["env"]}
                    assert env["FEEDSERVE_TLS_CERT"] == "/tls/tls.crt"
                    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tls")
                    assert secrets[mount["name"]] == f"feedserve-tls-{container['name']}"

    def test_every_pod_runs_as_a_non_root_user_without_privilege_escalation(self) -> None:
        """Each pod runs as a non-root user of the feedserve group; no container may gain privileges or keeps a
        capability. In the gateway pod the ranker is another user, and widens its rings to the group."""
        for resource in _resources():
            if resource["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
                continue
            template = (resource["spec"]["jobTemplate"]["spec"] if resource["kind"] == "CronJob" else resource["spec"])
            spec = template["template"]["spec"]
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000 and pod["fsGroup"] == 10000
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        gateway = next(r for r in _resources() if r["kind"] == "Deployment" and r["metadata"]["name"] == "gateway")
        ranker = next(c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "ranker")
        assert ranker["securityContext"]["runAsUser"] != gateway["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        assert {"name": "FEEDSERVE_RING_GROUP", "value": "1"} in ranker["env"]

    def test_no_replica_shares_a_volume_and_training_registers_in_the_store(self) -> None:
        """No PersistentVolumeClaim (so none ReadWriteMany) and no pod volume but Secrets, ConfigMaps and emptyDirs:
        replicas share nothing but the store, and any Deployment can scale. The training job registers the version
        it trains in the store, over the served space."""
        for resource in _resources():
            assert resource["kind"] != "PersistentVolumeClaim", resource["metadata"]["name"]
            if resource["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
                continue
            template = (resource["spec"]["jobTemplate"]["spec"] if resource["kind"] == "CronJob" else resource["spec"])
            for volume in template["template"]["spec"].get("volumes", []):
                assert {"secret", "configMap", "emptyDir"} & set(volume), (resource["metadata"]["name"], volume)
        train = next(r for r in _resources() if r["kind"] == "CronJob" and r["metadata"]["name"] == "train")
        args = train["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == "train" and "--register" in args and "--keep-space" in args

    def test_colocated_gateway_pod_shares_a_memory_backed_ring_volume(self) -> None:
        gateway = next(r for r in _resources() if r["kind"] == "Deployment" and r["metadata"]["name"] == "gateway")
        spec = gateway["spec"]["template"]["spec"]
        rings = next(v for v in spec["volumes"] if v["name"] == "rings")
        assert rings["emptyDir"]["medium"] == "Memory"
        for container in spec["containers"]:
            assert {"name": "rings", "mountPath": "/dev/shm"} in container["volumeMounts"]


class TestGrafana:
    def test_every_panel_queries_metrics_the_services_export(self) -> None:
        """Each metric a panel names is one the gateway, paramserver or mesh registry defines."""
        import json
        import re

        exported = {"feedserve_request_seconds_bucket", "feedserve_requests_total", "feedserve_hop_seconds_bucket",
                    "feedserve_degraded_total", "feedserve_shed_total", "feedserve_cache_hits_total",
                    "feedserve_cache_misses_total", "feedserve_mode", "feedserve_in_flight", "feedserve_circuit_open",
                    "feedserve_cost_total", "feedserve_cost_alerts_total", "feedserve_paramserver_rows",
                    "feedserve_paramserver_wal_lag_bytes", "feedserve_paramserver_hits_total",
                    "feedserve_paramserver_misses_total"}
        exported |= {"feedserve_answer_cache_hits_total", *_generator_metric_names()}
        dashboard = json.loads((ROOT / "deploy" / "grafana" / "feedserve.json").read_text())
        named = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"feedserve_[a-z_0-9]+", t["expr"])}
        assert named and named <= exported, named - exported
        assert "feedserve_generation_ttft_seconds_bucket" in named


def _generator_metric_names() -> set[str]:
    """The series the generator's metrics export, as Prometheus names them."""
    from generator import metrics

    names = set()
    for metric in (metrics.TTFT_SECONDS, metrics.INTER_TOKEN_SECONDS, metrics.TOKENS, metrics.CACHE,
                   metrics.ESCALATIONS, metrics.COST, metrics.MODEL_EVENTS, metrics.RESIDENT_BYTES,
                   metrics.BUDGET_BYTES):
        for family in metric.describe():
            names |= {family.name, family.name + "_total", family.name + "_bucket"}
    return names


class TestDefaultQuota:
    def test_every_shipped_gateway_limits_each_tenant(self) -> None:
        """`feedserve up` (the gateway's own default), compose and k8s each give every tenant a finite rate and
        in-flight quota, so one tenant cannot take every slot: compose and k8s through the configuration file
        they share, which each gateway is pointed at."""
        import tomllib

        from gateway.__main__ import build_parser
        from gateway.quotas import TenantQuotas

        shared = tomllib.loads(CONFIG.read_text())
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["gateway"]
        pod = next(r for r in _resources() if r["kind"] == "Deployment" and r["metadata"]["name"] == "gateway")
        k8s = next(c for c in pod["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway")
        assert compose["environment"]["FEEDSERVE_CONFIG"] == "/etc/feedserve/feedserve.toml"
        assert "./deploy/k8s/feedserve.toml:/etc/feedserve/feedserve.toml:ro" in compose["volumes"]
        assert {"name": "FEEDSERVE_CONFIG", "value": "/etc/feedserve/feedserve.toml"} in k8s["env"]
        assert not any("--tenant-quota" in arg for arg in [*compose["command"], *k8s["args"]])  # the file's, alone
        specs = {"up": build_parser().parse_args([]).tenant_quota, "compose and k8s": shared["gateway"]["tenant-quota"]}
        for where, spec in specs.items():
            quota = TenantQuotas.parse(spec)
            assert quota.requests_per_s > 0 and 0 < quota.in_flight < 16, (where, spec)


class TestSharedConfiguration:
    def test_every_service_and_feedserve_up_accept_the_shipped_file(self) -> None:
        """The ConfigMap's file (kustomize generates it from deploy/k8s/feedserve.toml, compose mounts the same
        file) holds only keys each service's parser accepts, and none `feedserve up` sets itself; every service
        container of every manifest is pointed at it and mounts it."""
        import importlib

        from cli.options import STACK_OPTIONS, check_service_sections
        from mesh.settings import apply_section, load_config

        config = load_config(CONFIG)
        check_service_sections(CONFIG, config)
        for service, section in config.items():
            parser = importlib.import_module(f"{service}.__main__").build_parser()
            assert apply_section(parser, CONFIG, service, section, refused=STACK_OPTIONS).keys() == section.keys()
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        assert {"name": "feedserve-config", "files": ["feedserve.toml"]} in kustomization["configMapGenerator"]
        for resource in _resources():
            pod = resource.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                if container.get("command", [])[:2] == ["python", "-m"]:
                    assert {"name": "FEEDSERVE_CONFIG", "value": "/etc/feedserve/feedserve.toml"} in container["env"]
                    assert {"name": "config", "mountPath": "/etc/feedserve", "readOnly": True} in container["volumeMounts"]
                    assert {"name": "config", "configMap": {"name": "feedserve-config"}} in pod["volumes"]
