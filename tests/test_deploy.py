"""deploy/ stays true to the code: every manifest parses, every command-line flag it uses exists, and
every secret or config key the hub's Deployment reads is defined. (Nothing here runs Kubernetes.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from edgeloop.hub.cli import hub
from edgeloop.relay.cli import relay

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def k8s() -> dict[str, dict]:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def flags_ok(command: click.Command, argv: list[str]) -> list[str]:
    """The --flags in argv that `command` does not take."""
    known = {o for p in command.params for o in p.opts + p.secondary_opts}
    return [a for a in argv if a.startswith("--") and a.split("=")[0] not in known]


def test_every_manifest_parses_and_names_what_it_is():
    objs = k8s()
    assert {"Deployment/edgeloop-hub", "Service/edgeloop-hub", "ConfigMap/edgeloop-hub", "Secret/edgeloop-hub",
            "Service/edgeloop-postgres", "PersistentVolumeClaim/edgeloop-hub-data"} <= set(objs)
    assert objs["Service/edgeloop-postgres"]["spec"]["type"] == "ExternalName"


def test_the_hub_deployment_uses_real_flags_and_defined_keys():
    objs = k8s()
    pod = objs["Deployment/edgeloop-hub"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["hub", "serve"] and flags_ok(hub.commands["serve"], args[2:]) == []
    secret = objs["Secret/edgeloop-hub"]["stringData"]
    config = objs["ConfigMap/edgeloop-hub"]["data"]
    for env in container["env"]:
        assert env["valueFrom"]["secretKeyRef"]["key"] in secret
    env_names = {e["name"] for e in container["env"]} | set(config)
    assert set(re.findall(r"\$\((\w+)\)", " ".join(args))) <= env_names
    # The envvars the hub reads for its tokens and database are the ones set.
    serve = {p.name: p for p in hub.commands["serve"].params}
    assert serve["tokens"].envvar in env_names and serve["db"].envvar in env_names
    (secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert {i["key"] for i in secret_volume["secret"]["items"]} <= set(secret)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    claim = objs["PersistentVolumeClaim/edgeloop-hub-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas share the blobs


def test_the_site_compose_file_runs_the_relay_with_real_flags():
    site = yaml.safe_load((DEPLOY / "compose" / "site.yaml").read_text())
    assert {"mosquitto", "relay"} <= set(site["services"])
    argv = shlex.split(site["services"]["relay"]["command"][0].replace("$$", "$"))
    assert argv[:6] == ["exec", "edgeloop", "--log-format", "json", "relay", "run"]
    assert flags_ok(relay.commands["run"], argv[6:]) == []


def test_the_systemd_units_use_real_flags():
    from edgeloop.agent.cli import agent

    for unit, command in (("edgeloop-relay.service", relay.commands["run"]),
                          ("edgeloop-agent.service", agent.commands["run"])):
        text = (DEPLOY / "systemd" / unit).read_text().replace("\\\n", " ")
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        argv = shlex.split(exec_start.split("=", 1)[1])
        assert flags_ok(command, argv) == [], unit


def test_the_training_job_runs_the_trainer_contract_on_the_hubs_volume():
    objs = k8s()
    job = objs["Job/edgeloop-train"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "edgeloop.hub.training.builtin"]
    from edgeloop.hub.training.builtin import TASKS, parser

    known = {o for a in parser()._actions for o in a.option_strings}
    assert [a for a in command if a.startswith("--") and a not in known] == []
    assert {"--data", "--parent", "--out"} <= set(command) and command[3] in TASKS
    env = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\((\w+)\)", " ".join(command))) <= env
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"edgeloop-hub-data"}  # the volume the hub writes DATA/jobs on
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
