"""The offline check of deploy/kubernetes (run by `deploy/kubernetes/check`)."""

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OVERLAYS = ["small", "production", "keda"]
KUBERNETES_VERSION = "1.32.0"  # the kubectl on this machine
# Custom resources: no schema offline; listed, not validated.
UNVALIDATED = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}
PG_PORT = 15436


def say(text):
    print(text, flush=True)


def fail(text):
    say(f"FAILED: {text}")
    sys.exit(1)


def render(overlay):
    path = os.path.join(ROOT, "deploy", "kubernetes", "overlays", overlay)
    result = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"kubectl kustomize {overlay}: {result.stderr}")
    return result.stdout


def validate(overlay, text, workdir):
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    core = [doc for doc in documents if (doc["apiVersion"], doc["kind"]) not in UNVALIDATED]
    skipped = sorted({doc["kind"] for doc in documents} - {doc["kind"] for doc in core})
    path = os.path.join(workdir, f"{overlay}-core.yaml")
    with open(path, "w") as file:
        yaml.safe_dump_all(core, file)
    validator = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    result = subprocess.run([validator, "--strict", "--quiet", "-k", KUBERNETES_VERSION, path],
                            capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{overlay}: schema validation:\n{result.stdout}{result.stderr}")
    say(f"    {len(core)} objects valid against Kubernetes {KUBERNETES_VERSION} (strict)"
        + (f"; not validated (custom resources): {', '.join(skipped)}" if skipped else ""))
    return documents


class Postgres:
    def __init__(self, directory):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                text=True).stdout.strip()
        if not os.path.exists(os.path.join(bindir, "initdb")):
            candidates = sorted(d for d in os.listdir("/usr/lib/postgresql"))
            bindir = f"/usr/lib/postgresql/{candidates[-1]}/bin"
        self.bindir = bindir
        self.data = os.path.join(directory, "pg")
        os.makedirs(self.data)
        self.root = os.getuid() == 0
        if self.root:
            shutil.chown(directory, "postgres")
            shutil.chown(self.data, "postgres")
        self.run("initdb", "-D", self.data, "-U", "chatd", "--auth=trust", "-E", "UTF8",
                 "--locale=C")
        self.run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.data, "log"), "-o",
                 f"-p {PG_PORT} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
                 "start")
        subprocess.run(["psql", f"postgres://chatd@127.0.0.1:{PG_PORT}/postgres", "-qc",
                        "CREATE DATABASE chatd"], check=True)
        self.url = f"postgres://chatd@127.0.0.1:{PG_PORT}/chatd"

    def run(self, program, *args):
        command = [os.path.join(self.bindir, program), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


def test_secret(postgres):
    """The values of the Secret `chatd` the manifests reference, for the local PostgreSQL."""
    return {
        "database-url": postgres.url,
        "direct-database-url": postgres.url,
        "encryption-key": base64.b64encode(os.urandom(32)).decode(),
    }


def environment(container, objects, secret):
    env = {"PATH": "/usr/bin:/bin"}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(objects[("ConfigMap", name)]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            if ref["name"] != "chatd":
                fail(f"unknown Secret {ref['name']}")
            env[variable["name"]] = secret[ref["key"]]
        else:
            ref = reference["configMapKeyRef"]
            env[variable["name"]] = objects[("ConfigMap", ref["name"])]["data"][ref["key"]]
    return env


def start(binary, container, pod, objects, secret, workdir):
    if container.get("command"):
        fail(f"{container['name']}: `command` would replace the image's entrypoint (chatd)")
    args = [binary, *container.get("args", [])]
    env = environment(container, objects, secret)
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    if not context.get("runAsNonRoot") or not context.get("readOnlyRootFilesystem"):
        fail(f"{container['name']}: must run as non-root with a read-only root filesystem")
    if context.get("allowPrivilegeEscalation", True):
        fail(f"{container['name']}: allowPrivilegeEscalation must be false")
    # A read-only working directory: nothing may be written outside declared volumes.
    cwd = tempfile.mkdtemp(dir=workdir)
    os.chmod(cwd, 0o555)
    options = {}
    if os.getuid() == 0:
        options = {"user": context["runAsUser"], "group": context["runAsGroup"],
                   "extra_groups": []}
    log = open(os.path.join(workdir, f"{container['name']}.log"), "w")
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                               **options)
    return process, log


def http_ok(url, deadline):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def check_overlay(binary, overlay, documents, postgres, workdir):
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    secret = test_secret(postgres)
    # The migration Job first, to completion.
    for (kind, name), job in objects.items():
        if kind != "Job":
            continue
        pod = job["spec"]["template"]["spec"]
        for container in pod["containers"]:
            process, log = start(binary, container, pod, objects, secret, workdir)
            if process.wait(timeout=60) != 0:
                fail(f"{overlay}: Job {name} exited {process.returncode} "
                     f"(log: {log.name})")
            say(f"    Job {name}: {' '.join(container['args'])} exited 0")
    # Then every Deployment's containers, with their probes.
    for (kind, name), deployment in objects.items():
        if kind != "Deployment":
            continue
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            process, log = start(binary, container, pod, objects, secret, workdir)
            try:
                ports = {port["name"]: port["containerPort"]
                         for port in container.get("ports", [])}
                for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                    probe = container.get(probe_name)
                    if not probe:
                        continue
                    get = probe["httpGet"]
                    port = ports.get(get["port"], get["port"])
                    url = f"http://127.0.0.1:{port}{get['path']}"
                    if not http_ok(url, time.time() + 30):
                        fail(f"{overlay}: {name} {probe_name} {url} did not answer 200 "
                             f"(log: {log.name})")
                    say(f"    {name}: {probe_name} {get['path']} on :{port} answers 200")
                if process.poll() is not None:
                    fail(f"{overlay}: {name} exited early (log: {log.name})")
            finally:
                process.send_signal(signal.SIGTERM)
                grace = pod.get("terminationGracePeriodSeconds", 30)
                try:
                    status = process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    fail(f"{overlay}: {name} did not stop within {grace} s of SIGTERM")
            if status != 0:
                fail(f"{overlay}: {name} exited {status} after SIGTERM (log: {log.name})")
            say(f"    {name}: stopped cleanly on SIGTERM")


def typos_fail(binary, documents, postgres, workdir):
    """A misspelt setting stops the container at once instead of being ignored."""
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    deployment = objects[("Deployment", "chatd-api")]
    pod = deployment["spec"]["template"]["spec"]
    container = dict(pod["containers"][0])
    container["env"] = [*container["env"], {"name": "CHATD_POOLSIZE", "value": "8"}]
    secret = test_secret(postgres)
    process, log = start(binary, container, pod, objects, secret, workdir)
    try:
        status = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        fail("a container with CHATD_POOLSIZE (a typo) kept running")
    log.close()
    with open(log.name) as file:
        output = file.read()
    if status == 0 or "CHATD_POOLSIZE" not in output:
        fail(f"a typo in a setting was not refused by name: {output!r}")
    say("    a misspelt CHATD_* setting stops the container, naming it")


def main():
    binary = os.path.abspath(sys.argv[1])
    workdir = tempfile.mkdtemp(prefix="chatd-k8s-check-")
    os.chmod(workdir, 0o755)
    postgres = Postgres(os.path.join(workdir, "db"))
    try:
        for overlay in OVERLAYS:
            say(f"==> overlay {overlay}")
            documents = validate(overlay, render(overlay), workdir)
            check_overlay(binary, overlay, documents, postgres, workdir)
        typos_fail(binary, documents, postgres, workdir)
    finally:
        postgres.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    say("all overlays render, validate and run")


if __name__ == "__main__":
    main()
