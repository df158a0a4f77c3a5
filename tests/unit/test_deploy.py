import copy

import pytest
import yaml
from typer.testing import CliRunner

from deployment.deploy import DeployError, check_seldon_deployment, render

pytestmark = pytest.mark.unit


def test_champion_only_and_canary():
    (sdep,) = render("prod", "m3")
    assert [p["name"] for p in sdep["spec"]["predictors"]] == ["champion"]
    assert sdep["spec"]["predictors"][0]["traffic"] == 100
    (sdep,) = render("prod", "m3", "m4", image="111122223333.dkr.ecr.eu-west-1.amazonaws.com/mnist-continual/serving:abc123")
    champ, chall = sdep["spec"]["predictors"]
    assert (champ["traffic"], chall["traffic"]) == (90, 10)
    assert chall["labels"]["mnistcl/model-version"] == "m4"
    pod = champ["componentSpecs"][0]["spec"]["containers"][0]
    assert pod["resources"]["limits"]["cpu"] == "2" and pod["readinessProbe"]["httpGet"]["path"] == "/health/status"
    assert "--host" in pod["args"] and champ["annotations"]["prometheus.io/scrape"] == "true"
    assert sdep["metadata"]["namespace"] == "mnist-prod" and champ["replicas"] == 3
    check_seldon_deployment(sdep)
    assert pod["image"].endswith("/mnist-continual/serving:abc123")
    # The registry URL is Terraform's (the environment's bucket), read from its ConfigMap; the
    # ServiceAccount with the IRSA role is Terraform's too, so a kubectl apply never strips it.
    store = next(e for e in pod["env"] if e["name"] == "MNISTCL_STORE_URL")
    assert store["valueFrom"]["configMapKeyRef"] == {"name": "mnistcl-settings", "key": "MNISTCL_STORE_URL"}
    assert champ["componentSpecs"][0]["spec"]["serviceAccountName"] == "mnist-serving"
    assert champ["annotations"]["prometheus.io/path"] == "/prometheus"
    # Canary or not, every request is paired: each predictor shadows the other alias.
    env = {p["name"]: {e["name"]: e.get("value") for e in p["componentSpecs"][0]["spec"]["containers"][0]["env"]}
           for p in sdep["spec"]["predictors"]}
    assert (env["champion"]["MNISTCL_SERVE_ALIAS"], env["champion"]["MNISTCL_SHADOW_ALIAS"]) == ("champion", "challenger")
    assert (env["challenger"]["MNISTCL_SERVE_ALIAS"], env["challenger"]["MNISTCL_SHADOW_ALIAS"]) == ("challenger",
                                                                                                    "champion")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["spec"]["predictors"][0].update(traffic=150), "traffic"),
        (lambda d: d["spec"]["predictors"][0]["graph"].update(type="MODELL"), "type"),
        (lambda d: d["spec"]["predictors"][0].pop("graph"), "graph"),
        (lambda d: d["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0].update(imagePullPolcy="x"),
         "pod spec invalid"),
        (lambda d: d["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["ports"][0].update(
            containerPort="http"), "pod spec invalid"),
    ],
)
def test_schema_checks_can_fail(mutate, needle):
    (sdep,) = render("staging", "m1", "m2")
    bad = copy.deepcopy(sdep)
    mutate(bad)
    with pytest.raises(DeployError, match=needle):
        check_seldon_deployment(bad)


def test_unknown_env():
    with pytest.raises(DeployError, match="unknown environment 'qa'"):
        render("qa", "m1")


def test_cli_render(tmp_path, monkeypatch):
    from cli import app
    from mnistcl.registry import Registry
    from mnistcl.storage import LocalStorage

    home = tmp_path / "home"
    monkeypatch.setenv("MNISTCL_HOME", str(home))
    r = CliRunner().invoke(app, ["deploy", "render", "--env", "prod"])
    assert r.exit_code == 2 and "no model is champion yet" in r.output
    reg = Registry(LocalStorage(home / "store"))
    f = tmp_path / "model.onnx"
    f.write_bytes(b"onnx bytes")
    for _ in range(2):
        reg.register(files={"onnx": f}, family="torchnet", config={}, dataset="v1")
    reg.promote("m1", "champion", reason="t")
    reg.promote("m2", "challenger", reason="t")
    out = tmp_path / "sdep.yaml"
    r = CliRunner().invoke(app, ["deploy", "render", "--env", "prod", "-o", str(out)])
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["SeldonDeployment"]
    assert docs[0]["metadata"]["annotations"] == {"mnistcl/champion": "m1", "mnistcl/challenger": "m2"}
    image = "reg.example/mnist-continual/serving:0a1b2c"
    r = CliRunner().invoke(app, ["deploy", "render", "--env", "prod", "--image", image])
    assert r.exit_code == 0, r.output
    pods = [p["componentSpecs"][0]["spec"]["containers"][0] for p in yaml.safe_load(r.output)["spec"]["predictors"]]
    assert [c["image"] for c in pods] == [image, image]


def test_model_servers_autoscale_within_each_environments_bounds(tmp_path):
    """Seldon's hpaSpec per predictor from configs/deploy.yaml: CPU always, requests per second
    when asked for; the challenger starts from one pod; the schema (Seldon 1.17's SeldonHpaSpec)
    refuses what the operator would."""
    from deployment.deploy import load_env

    for env in ("staging", "prod"):
        bounds = load_env(env)["autoscaling"]
        (sdep,) = render(env, "m1", "m2")
        check_seldon_deployment(sdep)
        champion, challenger = sdep["spec"]["predictors"]
        hpa = champion["componentSpecs"][0]["hpaSpec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (bounds["min_replicas"], bounds["max_replicas"])
        assert champion["replicas"] == bounds["min_replicas"]
        assert hpa["metricsv2"] == [{"type": "ContainerResource", "containerResource": {
            "name": "cpu", "container": "classifier",
            "target": {"type": "Utilization", "averageUtilization": bounds["cpu_utilization"]}}}]
        assert champion["componentSpecs"][0]["spec"]["containers"][0]["name"] == "classifier"
        assert challenger["componentSpecs"][0]["hpaSpec"]["minReplicas"] == 1
    assert load_env("prod")["autoscaling"]["max_replicas"] > load_env("staging")["autoscaling"]["max_replicas"]

    cfg = yaml.safe_load(open("configs/deploy.yaml"))
    cfg["base"]["autoscaling"]["requests_per_pod"] = 150
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (sdep,) = render("staging", "m1", path=path)
    metrics = sdep["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]["metricsv2"]
    assert metrics[1] == {"type": "Pods", "pods": {"metric": {"name": "mnist_requests_per_second"},
                                                   "target": {"type": "AverageValue", "averageValue": "150"}}}
    check_seldon_deployment(sdep)
    for mutate, needle in [(lambda h: h.pop("maxReplicas"), "maxReplicas"),
                           (lambda h: h["metricsv2"][0].update(type="Cpu"), "Cpu"),
                           (lambda h: h["metricsv2"][0]["containerResource"]["target"].update(averageUtilization="x"),
                            "x"),
                           # v2beta1's field inside a v2 target: the CRD (and so the API server) refuses it
                           (lambda h: h["metricsv2"][0]["containerResource"]["target"].update(targetAverageUtilization=70),
                            "targetAverageUtilization"),
                           (lambda h: h.update(minReplicas=0), "0")]:
        bad = copy.deepcopy(sdep)
        mutate(bad["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"])
        with pytest.raises(DeployError, match=needle):
            check_seldon_deployment(bad)
    cfg["base"]["autoscaling"].update(min_replicas=4, max_replicas=2)
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DeployError, match="min_replicas <= max_replicas"):
        render("staging", "m1", path=path)
