"""The production templates under infra/ (image, Kubernetes manifests, Spark properties, GPU discovery) agree
with each other and with the code: every manifest has the shape its kind needs, every path a manifest names is
one the image holds, the lake is the same claim at the same /lake everywhere, the CLI accepts the jobs'
arguments, the GPU amounts match. No Docker engine, no cluster, no network: files are parsed, not deployed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from functools import cache
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml

from anomalake.pipelines.config import CONF_DIR, load_tables
from anomalake.pipelines.jobs.cli import build_parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
GPU_CONF = INFRA / "gpu" / "spark-gpu.conf"
CLIENT_CONF = K8S / "spark-k8s.conf"
DISCOVER = INFRA / "gpu" / "discover_gpus.sh"
LAKE = "/lake"
MANIFESTS = [
    "spark-application.yaml",
    "spark-application-train-gpu.yaml",
    "executor-pod-template.yaml",
    "executor-pod-template-gpu.yaml",
    "rbac.yaml",
    "lake-pvc.yaml",
    "airflow-values.yaml",
]
# Written by the packaging work (`make package`, the spark-submit entry point), not by these templates.
BUILT_ELSEWHERE = {"infra/anomalake_main.py"}


# ---------------------------------------------------------------- schemas (only what the templates rely on)

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
METADATA = {"type": "object", "required": ["name", "namespace"], "properties": {"name": NAME, "namespace": NAME}}
ENV = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "value": {"type": "string"},  # a YAML number or boolean here is rejected by Kubernetes
            "valueFrom": {"type": "object"},
        },
    },
}
MOUNTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "mountPath"],
        "properties": {"name": {"type": "string"}, "mountPath": {"type": "string", "pattern": "^/"}},
    },
}
VOLUMES = {
    "type": "array",
    "items": {"type": "object", "required": ["name"], "minProperties": 2, "properties": {"name": {"type": "string"}}},
}
TOLERATIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["key", "operator"],
        "properties": {
            "key": {"type": "string"},
            "operator": {"enum": ["Exists", "Equal"]},
            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        },
    },
}
SPARK_MEMORY = {"type": "string", "pattern": r"^[0-9]+[kmgt]$"}  # Spark's units (4g), not Kubernetes' (4Gi)
ROLE_FIELDS = {
    "cores": {"type": "integer", "minimum": 1},
    "coreLimit": {"type": "string"},
    "memory": SPARK_MEMORY,
    "memoryOverhead": SPARK_MEMORY,
    "labels": {"type": "object"},
    "env": ENV,
    "volumeMounts": MOUNTS,
    "tolerations": TOLERATIONS,
    "serviceAccount": {"type": "string"},
    "gpu": {
        "type": "object",
        "required": ["name", "quantity"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
    },
}
SPARK_APPLICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "sparkoperator.k8s.io/v1beta2"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,  # a misspelt field would be dropped silently
            "required": [
                "type",
                "pythonVersion",
                "mode",
                "image",
                "mainApplicationFile",
                "arguments",
                "sparkVersion",
                "restartPolicy",
                "driver",
                "executor",
                "volumes",
            ],
            "properties": {
                "type": {"const": "Python"},
                "pythonVersion": {"const": "3"},
                "mode": {"const": "cluster"},
                "image": {"type": "string", "pattern": r"^[^:\s]+:[^:\s]+$"},
                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "mainApplicationFile": {"type": "string", "pattern": "^local:///"},
                "arguments": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "sparkVersion": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
                "restartPolicy": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["Never", "OnFailure", "Always"]}},
                },
                "sparkConf": {"type": "object", "additionalProperties": {"type": "string"}},  # the CRD: strings only
                "volumes": VOLUMES,
                "driver": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": ROLE_FIELDS,
                    "required": ["cores", "memory", "serviceAccount", "env", "volumeMounts"],
                },
                "executor": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {**ROLE_FIELDS, "instances": {"type": "integer", "minimum": 1}},
                    "required": ["instances", "cores", "memory", "env", "volumeMounts"],
                },
            },
        },
    },
}
POD = {
    "type": "object",
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"const": "v1"},
        "spec": {
            "type": "object",
            "required": ["containers", "volumes"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "env": ENV,
                            "volumeMounts": MOUNTS,
                            "resources": {
                                "type": "object",
                                "properties": {"limits": {"type": "object"}, "requests": {"type": "object"}},
                            },
                        },
                    },
                },
                "volumes": VOLUMES,
                "tolerations": TOLERATIONS,
            },
        },
    },
}
SERVICE_ACCOUNT = {
    "type": "object",
    "required": ["apiVersion", "metadata"],
    "properties": {"apiVersion": {"const": "v1"}, "metadata": METADATA},
}
ROLE = {
    "type": "object",
    "required": ["apiVersion", "metadata", "rules"],
    "properties": {
        "apiVersion": {"const": "rbac.authorization.k8s.io/v1"},
        "metadata": METADATA,
        "rules": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["apiGroups", "resources", "verbs"],
                "properties": {
                    "apiGroups": {"type": "array", "items": {"type": "string"}},
                    "resources": {"type": "array", "items": {"type": "string"}},
                    "verbs": {
                        "type": "array",
                        "items": {
                            "enum": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
                        },
                    },
                },
            },
        },
    },
}
ROLE_BINDING = {
    "type": "object",
    "required": ["apiVersion", "metadata", "roleRef", "subjects"],
    "properties": {
        "apiVersion": {"const": "rbac.authorization.k8s.io/v1"},
        "metadata": METADATA,
        "roleRef": {
            "type": "object",
            "required": ["apiGroup", "kind", "name"],
            "properties": {
                "apiGroup": {"const": "rbac.authorization.k8s.io"},
                "kind": {"enum": ["Role", "ClusterRole"]},
            },
        },
        "subjects": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["kind", "name"]}},
    },
}
PVC = {
    "type": "object",
    "required": ["apiVersion", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "v1"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["accessModes", "resources"],
            "properties": {
                # executors on many nodes write the lake at once
                "accessModes": {"type": "array", "contains": {"const": "ReadWriteMany"}},
                "resources": {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {
                        "requests": {
                            "type": "object",
                            "required": ["storage"],
                            "properties": {"storage": {"type": "string", "pattern": r"^[0-9]+(Mi|Gi|Ti)$"}},
                        }
                    },
                },
            },
        },
    },
}
AIRFLOW_VALUES = {
    "type": "object",
    "required": ["executor", "images", "env", "extraEnv", "workers", "dags", "config"],
    "properties": {
        "executor": {"const": "KubernetesExecutor"},
        "images": {
            "type": "object",
            "required": ["airflow"],
            "properties": {
                "airflow": {
                    "type": "object",
                    "required": ["repository", "tag"],
                    "properties": {"repository": {"type": "string"}, "tag": {"type": "string"}},
                }
            },
        },
        "env": ENV,
        "extraEnv": {"type": "string"},  # the chart takes extraEnv as a (templated) string
        "workers": {
            "type": "object",
            "required": ["serviceAccount", "extraVolumes", "extraVolumeMounts"],
            "properties": {
                "extraVolumes": VOLUMES,
                "extraVolumeMounts": MOUNTS,
                "serviceAccount": {"type": "object", "required": ["create", "name"]},
            },
        },
        "config": {
            "type": "object",
            "required": ["core"],
            "properties": {"core": {"type": "object", "required": ["dags_folder"]}},
        },
    },
}
SCHEMAS = {
    "SparkApplication": SPARK_APPLICATION,
    "Pod": POD,
    "ServiceAccount": SERVICE_ACCOUNT,
    "Role": ROLE,
    "RoleBinding": ROLE_BINDING,
    "PersistentVolumeClaim": PVC,
}


# ---------------------------------------------------------------- readers


@cache
def docs(name: str) -> tuple[dict, ...]:
    return tuple(d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None)


def one(name: str, kind: str | None = None) -> dict:
    found = [d for d in docs(name) if kind is None or d.get("kind") == kind]
    assert len(found) == 1, f"{name}: expected one {kind or 'document'}, found {len(found)}"
    return found[0]


def app(name: str) -> dict:
    return one(name, "SparkApplication")["spec"]


@cache
def properties(path: Path) -> dict[str, str]:
    """A Spark properties file (java.util.Properties: `key value` or `key=value`, # comments)."""
    result = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = re.split(r"(\s*[=:]\s*|\s+)", line, maxsplit=1)
            assert key not in result, f"{path.name}: {key} set twice"
            result[key] = value.strip()
    return result


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with comment lines dropped and continuation lines joined, as Docker reads it."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    split = (line.strip().partition(" ") for line in text.splitlines())
    return tuple((word.upper(), rest.strip()) for word, _, rest in split if word)


def instructions(kind: str) -> list[str]:
    return [rest for i, rest in dockerfile() if i == kind]


@cache
def image_env() -> dict[str, str]:
    return dict(word.split("=", 1) for rest in instructions("ENV") for word in shlex.split(rest))


@cache
def image_args() -> dict[str, str]:
    return dict(rest.split("=", 1) for rest in instructions("ARG"))


def expand(text: str) -> str:
    """The Dockerfile's ${ARG} references with their defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: image_args().get(m.group(1), m.group(0)), text)


@cache
def image_files() -> dict[str, str]:
    """Path in the image -> source in the build context, for every COPY (a folder copies its files)."""
    files = {}
    for rest in instructions("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        *sources, dest = (expand(w) for w in words)
        assert not (len(sources) > 1 and not dest.endswith("/")), f"COPY of several files to a file: {rest}"
        for source in sources:
            if source.endswith("/"):  # a folder: its files land under dest
                for path in sorted((REPO / source).rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts:
                        files[str(PurePosixPath(dest) / path.relative_to(REPO / source))] = str(path.relative_to(REPO))
            else:
                files[dest + PurePosixPath(source).name if dest.endswith("/") else dest] = source
    return files


def env_of(entries: list[dict]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in entries}


def walk(node, key: str):
    """Every value stored under `key` anywhere inside node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


@cache
def values() -> dict:
    return one("airflow-values.yaml")


@cache
def values_env() -> dict[str, dict]:
    """The Airflow pods' variables, from `env` and the `extraEnv` string: name -> entry."""
    entries = values()["env"] + yaml.safe_load(values()["extraEnv"])
    jsonschema.validate(entries, ENV)
    return {e["name"]: e for e in entries}


def k8s_objects() -> list[tuple[str, dict]]:
    return [(name, d) for name in MANIFESTS if name != "airflow-values.yaml" for d in docs(name)]


# ---------------------------------------------------------------- shape


def test_every_manifest_parses_and_has_the_shape_of_its_kind():
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted(MANIFESTS), "a manifest the tests do not know"
    for name in MANIFESTS:
        assert docs(name), f"{name} is empty"
        for doc in docs(name):
            if name == "airflow-values.yaml":
                jsonschema.validate(doc, AIRFLOW_VALUES)
                continue
            assert doc.get("kind") in SCHEMAS, f"{name}: unexpected kind {doc.get('kind')!r}"
            try:
                jsonschema.validate(doc, SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as error:
                pytest.fail(f"{name} ({doc['kind']}): {error.message} at {'/'.join(map(str, error.absolute_path))}")


def test_the_schemas_catch_the_usual_mistakes():
    """A date left unquoted (YAML makes it a date), a boolean Spark property, a misspelt field."""
    good = one("spark-application.yaml", "SparkApplication")
    for path, bad in [
        (("spec", "arguments"), ["score", "--date", yaml.safe_load("2026-01-15")]),
        (("spec", "sparkConf"), {"spark.python.worker.reuse": True}),
        (("spec", "mainApplicationfile"), "local:///x.py"),
    ]:
        doc = json.loads(json.dumps(good))
        doc[path[0]][path[1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SPARK_APPLICATION)


def test_names_and_namespaces_agree():
    namespace = properties(CLIENT_CONF)["spark.kubernetes.namespace"]
    for name, doc in k8s_objects():
        if doc["kind"] != "Pod":  # templates take the namespace Spark runs in
            assert doc["metadata"]["namespace"] == namespace, f"{name} {doc['kind']}"
    account = one("rbac.yaml", "ServiceAccount")["metadata"]["name"]
    role, binding = one("rbac.yaml", "Role"), one("rbac.yaml", "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert {"kind": "ServiceAccount", "name": account, "namespace": namespace} in binding["subjects"]
    granted = {
        (r, v) for rule in role["rules"] if "" in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("create", "delete", "get", "list", "watch"):
            assert (resource, verb) in granted, f"the driver's role lacks {verb} {resource}"
    # Both kinds of driver use the account: SparkApplication driver pods and Airflow worker pods (client mode).
    for name in ("spark-application.yaml", "spark-application-train-gpu.yaml"):
        assert app(name)["driver"]["serviceAccount"] == account, name
    assert values()["workers"]["serviceAccount"] == {"create": False, "name": account}


# ---------------------------------------------------------------- the lake


def test_every_lake_volume_is_the_claim_of_lake_pvc_mounted_at_lake():
    claim = one("lake-pvc.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    holders = [(name, d) for name, d in k8s_objects() if d["kind"] in ("SparkApplication", "Pod")]
    holders.append(("airflow-values.yaml", values()))
    for name, doc in holders:
        volumes = [v for key in ("volumes", "extraVolumes") for vs in walk(doc, key) for v in vs]
        mounts = [m for key in ("volumeMounts", "extraVolumeMounts") for ms in walk(doc, key) for m in ms]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
        assert set(claims.values()) == {claim}, f"{name}: claims {claims} (the lake is {claim})"
        assert mounts, f"{name}: nothing mounts the lake"
        for mount in mounts:
            assert mount["name"] in {v["name"] for v in volumes}, f"{name}: mount of undefined volume {mount['name']}"
            assert mount["mountPath"] == LAKE, f"{name}: the lake mounted at {mount['mountPath']}"
        lakes = {
            e.get("value")
            for entries in walk(doc, "env")
            if isinstance(entries, list)
            for e in entries
            if e["name"] == "ANOMALAKE_LAKE"
        }
        assert lakes <= {LAKE}, f"{name}: ANOMALAKE_LAKE={lakes}"
    # Every pod Spark runs mounts it: the driver and executors of both applications.
    for name in ("spark-application.yaml", "spark-application-train-gpu.yaml"):
        for role in ("driver", "executor"):
            spec = app(name)[role]
            assert [m["mountPath"] for m in spec["volumeMounts"]] == [LAKE], f"{name} {role}"
            assert env_of(spec["env"])["ANOMALAKE_LAKE"] == LAKE, f"{name} {role}"
    assert values_env()["ANOMALAKE_LAKE"]["value"] == LAKE
    assert image_env()["ANOMALAKE_LAKE"] == LAKE


# ---------------------------------------------------------------- the image


def test_the_image_holds_every_path_the_templates_name():
    files = image_files()
    for name in ("spark-application.yaml", "spark-application-train-gpu.yaml"):
        main = app(name)["mainApplicationFile"].removeprefix("local://")
        assert files.get(main) == "infra/anomalake_main.py", f"{name}: {main} is not the image's entry point"
    gpu = app("spark-application-train-gpu.yaml")["sparkConf"]["spark.executor.resource.gpu.discoveryScript"]
    assert gpu == properties(GPU_CONF)["spark.executor.resource.gpu.discoveryScript"]
    assert files.get(gpu) == "infra/gpu/discover_gpus.sh"
    for conf, template in ((CLIENT_CONF, "executor-pod-template.yaml"), (GPU_CONF, "executor-pod-template-gpu.yaml")):
        props = properties(conf)
        assert files.get(props["spark.kubernetes.executor.podTemplateFile"]) == f"infra/k8s/{template}", conf.name
        containers = [c["name"] for c in one(template, "Pod")["spec"]["containers"]]
        assert props["spark.kubernetes.executor.podTemplateContainerName"] in containers, conf.name
    # Client mode reads spark-k8s.conf as $SPARK_CONF_DIR/spark-defaults.conf.
    conf_dir = values_env()["SPARK_CONF_DIR"]["value"]
    assert files.get(f"{conf_dir}/spark-defaults.conf") == "infra/k8s/spark-k8s.conf"
    assert files.get(image_env()["ANOMALAKE_TABLES"]) == "pipelines/conf/tables.yml"
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    assert files.get(entrypoint[0]) == "infra/docker/spark-entrypoint.sh"


def test_the_image_installs_the_wheel_with_existing_extras_and_restores_pyspark():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert image_args()["EXTRA"] == "cpu" and {"cpu", "gpu"} <= set(extras), "EXTRA=cpu|gpu must be extras"
    assert image_args()["VERSION"] == project["version"], "the wheel name follows pyproject's version"
    assert instructions("FROM")[0].startswith("python:3.11-slim")
    run = " && ".join(instructions("RUN"))
    install = re.search(r"pip install [^&]*-c (\S+) \"(\S+\.whl)\[([^\]]+)\]\"", run)
    assert install, 'pip install -c <constraints> "<wheel>[extras]" not found'
    assert image_files()[install.group(1)] == "infra/constraints.txt"
    wheel = expand(install.group(2))
    assert wheel in image_files() and image_files()[wheel] == f"dist/anomalake-{project['version']}-py3-none-any.whl"
    for extra in install.group(3).split(","):
        assert expand(extra) in extras, f"extra {extra} not in pyproject.toml"
    pin = next(d for d in project["dependencies"] if d.startswith("pyspark=="))
    reinstall = run.find(f"pip install --no-cache-dir --no-deps --force-reinstall {pin}")
    assert reinstall > install.start(), "pyspark must be reinstalled after the airflow provider's pyspark-client"
    assert "openjdk-17-jre-headless" in run
    env = image_env()
    assert env["TZ"] == "UTC" and env["PYSPARK_PYTHON"].startswith(env["VIRTUAL_ENV"])
    assert "SPARK_LOCAL_IP" not in env, "a driver pod must not bind to loopback"


def test_every_copied_file_exists_and_passes_the_dockerignore():
    ignore = [
        line
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sorted(set(image_files().values())):
        allowed = False
        for pattern in ignore:  # the last matching pattern wins, as in Docker
            if fnmatch(source, pattern.lstrip("!")):
                allowed = pattern.startswith("!")
        assert allowed, f"{source} is copied but excluded from the build context"
        if not source.startswith("dist/") and source not in BUILT_ELSEWHERE:
            assert (REPO / source).is_file(), f"the Dockerfile copies {source}, which does not exist"
    for script in ("infra/docker/spark-entrypoint.sh", "infra/gpu/discover_gpus.sh"):
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"
        subprocess.run([shutil.which("bash"), "-n", str(REPO / script)], check=True)


def test_the_entry_point_the_image_copies_runs_the_cli():
    missing = [f for f in BUILT_ELSEWHERE if not (REPO / f).is_file()]
    assert not missing, f"the Dockerfile copies files that do not exist: {missing}"
    assert "anomalake.pipelines.jobs.cli" in (REPO / "infra/anomalake_main.py").read_text()


# ---------------------------------------------------------------- the jobs


@pytest.mark.parametrize(
    "name, command", [("spark-application.yaml", "score"), ("spark-application-train-gpu.yaml", "train")]
)
def test_the_cli_accepts_the_applications_arguments(name, command):
    arguments = app(name)["arguments"]
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit:
        pytest.fail(f"{name}: `anomalake {' '.join(arguments)}` is a usage error")
    assert args.command == command
    assert args.table in load_tables(REPO / "pipelines" / "conf" / "tables.yml")
    assert (CONF_DIR / "detectors" / f"{args.detector}.yml").is_file(), f"no detector {args.detector}"
    if command == "score":
        assert bool(args.date) != bool(args.start or args.end), "score takes --date or --start/--end"
    else:
        assert args.start <= args.end


def test_the_master_is_the_same_everywhere():
    """pipelines/spark.py passes ANOMALAKE_MASTER to builder.master(), which wins over spark-submit's master."""
    master = properties(CLIENT_CONF)["spark.master"]
    assert master.startswith("k8s://https://")
    assert values_env()["ANOMALAKE_MASTER"]["value"] == master
    for name in ("spark-application.yaml", "spark-application-train-gpu.yaml"):
        spec = app(name)
        assert env_of(spec["driver"]["env"])["ANOMALAKE_MASTER"] == master, name
        assert "spark.master" not in spec.get("sparkConf", {}), f"{name}: the operator sets the master"
        memory = env_of(spec["driver"]["env"]).get("ANOMALAKE_DRIVER_MEMORY", spec["driver"]["memory"])
        assert memory == spec["driver"]["memory"], f"{name}: pipelines/spark.py would ask for another driver memory"
    image = values()["images"]["airflow"]
    assert properties(CLIENT_CONF)["spark.kubernetes.container.image"] == f"{image['repository']}:{image['tag']}"
    assert app("spark-application.yaml")["image"] == f"{image['repository']}:{image['tag']}"
    assert app("spark-application-train-gpu.yaml")["image"] == f"{image['repository']}:{image['tag']}-gpu"


def test_a_client_mode_driver_binds_to_its_pod():
    env = values_env()
    # settings.py defaults SPARK_LOCAL_IP to 127.0.0.1: in a pod it must be the pod's IP.
    assert env["SPARK_LOCAL_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    references = {k: re.fullmatch(r"\$\{env:(\w+)\}", v) for k, v in properties(CLIENT_CONF).items() if "${" in v}
    assert "spark.driver.host" in references
    for key, match in references.items():
        assert match and match.group(1) in env, f"spark-k8s.conf {key} reads a variable the Airflow pods lack"
    assert env[references["spark.driver.host"].group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_the_airflow_dags_folder_is_the_images():
    folder = values()["config"]["core"]["dags_folder"]
    assert image_env()["AIRFLOW__CORE__DAGS_FOLDER"] == folder
    assert image_files().get(f"{folder}/anomalake_dags.py") == "dags/anomalake_dags.py"


def test_spark_properties_agree_with_what_the_jobs_set():
    """pipelines/spark.py sets some properties itself; a template must not contradict them."""
    fixed = dict(re.findall(r'\.config\("([\w.]+)",\s*"([^"]*)"\)', (REPO / "pipelines" / "spark.py").read_text()))
    assert fixed.get("spark.sql.session.timeZone") == "UTC", "pipelines/spark.py changed: update this test"
    sources = {"spark-k8s.conf": properties(CLIENT_CONF), "spark-gpu.conf": properties(GPU_CONF)}
    sources |= {n: app(n).get("sparkConf", {}) for n in ("spark-application.yaml", "spark-application-train-gpu.yaml")}
    for name, props in sources.items():
        for key, value in props.items():
            assert fixed.get(key, value) == value, f"{name}: {key}={value}, the jobs set {fixed[key]}"
    # The model is cached per Python worker (score); a barrier training task needs a fresh one.
    assert app("spark-application.yaml")["sparkConf"]["spark.python.worker.reuse"] == "true"
    assert properties(CLIENT_CONF)["spark.python.worker.reuse"] == "true"
    assert app("spark-application-train-gpu.yaml")["sparkConf"]["spark.python.worker.reuse"] == "false"


def test_gpu_amounts_agree():
    conf = properties(GPU_CONF)
    spec = app("spark-application-train-gpu.yaml")
    for key, value in conf.items():
        if not key.startswith("spark.kubernetes."):  # pod templates are for spark-submit, not the operator
            assert spec["sparkConf"].get(key) == value, (
                f"spark-gpu.conf {key}={value}, the application says {spec['sparkConf'].get(key)}"
            )
    per_executor, per_task = (
        int(conf["spark.executor.resource.gpu.amount"]),
        float(conf["spark.task.resource.gpu.amount"]),
    )
    resource = f"{conf['spark.executor.resource.gpu.vendor']}/gpu"
    assert 0 < per_task <= per_executor
    assert spec["executor"]["gpu"] == {"name": resource, "quantity": per_executor}
    template = one("executor-pod-template-gpu.yaml", "Pod")["spec"]
    assert [c["resources"]["limits"][resource] for c in template["containers"]] == [per_executor]
    for tolerations in (template["tolerations"], spec["executor"]["tolerations"]):
        assert any(t["key"] == resource for t in tolerations), "GPU pods need the GPU nodes' toleration"
    cpu_limits = [
        c.get("resources", {}).get("limits", {}) for c in one("executor-pod-template.yaml", "Pod")["spec"]["containers"]
    ]
    assert not any(resource in limits for limits in cpu_limits), "the CPU template asks for no GPU"
    # A barrier stage starts only when every training task has a slot at once.
    workers = {env_of(spec[role]["env"]).get("ANOMALAKE_TRAIN_WORKERS") for role in ("driver", "executor")}
    assert len(workers) == 1, f"driver and executors disagree on ANOMALAKE_TRAIN_WORKERS: {workers}"
    assert 1 <= int(workers.pop()) <= spec["executor"]["instances"] * int(per_executor / per_task)


# ---------------------------------------------------------------- discover_gpus.sh


def discover(tmp_path: Path, nvidia_smi: str | None) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(nvidia_smi)
        fake.chmod(0o755)
    out = subprocess.run(
        [shutil.which("bash"), str(DISCOVER)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1, out.stdout
    return json.loads(out.stdout)


def test_discover_gpus_lists_what_nvidia_smi_lists(tmp_path):
    fake = '#!/bin/sh\n[ "$*" = "--query-gpu=index --format=csv,noheader" ] || exit 9\nprintf \'0\\n1\\n\'\n'
    assert discover(tmp_path, fake) == {"name": "gpu", "addresses": ["0", "1"]}


@pytest.mark.parametrize(
    "nvidia_smi", [None, "#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n"], ids=["missing", "failing"]
)
def test_discover_gpus_without_a_working_nvidia_smi_lists_none(tmp_path, nvidia_smi):
    assert discover(tmp_path, nvidia_smi) == {"name": "gpu", "addresses": []}
