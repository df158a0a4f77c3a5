"""Serving: ``mnistcl serve``, ``predict``, ``smoke``, ``predictions export``, ``deploy render``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from cli.app import (
    ExportFormat,
    _fail,
    _parse_since,
    _registry,
    _settings,
    app,
    console,
    deploy_app,
    pred_app,
    value,
)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1; 0.0.0.0 only in a container).")] = None,
    port: Annotated[int | None, typer.Option(help="REST port (default 9000).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port (default 6000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="gunicorn worker processes.")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="Threads per worker.")] = 4,
    grpc_port: Annotated[int, typer.Option(help="Also serve Seldon's gRPC API (seldon.protos.Model) on this port; 0: off.")] = 0,
) -> None:
    """Serve the registry's champion through the Seldon Core wrapper (its own environment, .venv-serve).

    Predictions: POST /api/v1.0/predictions; feedback: POST /api/v1.0/feedback; metrics: /metrics on
    the metrics port. With --grpc-port, the same over gRPC (Predict, SendFeedback). The champion is
    hot-swapped when the alias moves.

    Example:

      mnistcl serve --port 9000

      mnistcl serve --port 9000 --grpc-port 5000
    """
    import os

    from deployment import serve as launch

    settings = _settings(ctx)
    if not launch.SERVE_PYTHON.exists():
        _fail("the serving environment is missing: run `make venv-serve`")
    env = launch.environment(settings.store_url, settings.predictions_db_path,
                             settings.home_dir / "cache" / "serving", s3_endpoint_url=settings.s3_endpoint_url,
                             feedback_tokens=settings.feedback_tokens_value(),
                             predict_tokens=settings.predict_tokens.get_secret_value())
    host, port = host or settings.serve_host, port or settings.serve_port
    args = launch.command(host=host, port=port, metrics_port=metrics_port or settings.serve_metrics_port,
                          workers=workers, threads=threads, grpc_port=grpc_port)
    console.print(f"serving champion from {settings.store_url} on http://{host}:{port}"
                  + (f" and gRPC {host}:{grpc_port}" if grpc_port else ""))
    os.execve(args[0], args, env)


@app.command("predict")
def predict_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="PNG files (28x28 grayscale), sent in one request.")],
    url: Annotated[str | None, typer.Option(help="Server URL (default http://127.0.0.1:SERVE_PORT).")] = None,
) -> None:
    """Read digits in PNG images through the running server.

    Example:

      mnistcl predict digit.png

      mnistcl predict d1.png d2.png d3.png      # a cheque amount: several digits at once
    """
    import base64

    import httpx

    from serving.client import ModelServer, ServerError

    settings = _settings(ctx)
    base = url or f"http://127.0.0.1:{settings.serve_port}"
    try:
        pngs = [base64.b64encode(p.read_bytes()).decode() for p in images]
    except OSError as exc:
        _fail(str(exc))
    try:
        with ModelServer(base, predict_token=settings.predict_token_value()) as server:
            tags = server.predict_png(pngs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server at {base}: {exc} (start it with `mnistcl serve`)")
    except ServerError as exc:
        _fail(f"server answered {exc.status}: {exc.text[:500]}", code=1)
    for p, d, c in zip(images, tags["digits"], tags["confidence"], strict=True):
        console.print(f"{p}: [bold]{int(d)}[/bold] (confidence {c:.3f}{', LOW' if c < 0.5 else ''})")
    console.print(f"digits: [bold]{''.join(str(int(d)) for d in tags['digits'])}[/bold]  model {tags['model_version']}  "
                  f"request {tags['request_id']}")




@app.command("feedback")
def feedback_cmd(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request id a prediction answered with.")],
    labels: Annotated[list[int], typer.Argument(help="The true digit of each image of that request, in order.")],
    url: Annotated[str | None, typer.Option(help="Server URL (default http://127.0.0.1:SERVE_PORT).")] = None,
) -> None:
    """Send the true labels of an earlier prediction, with this installation's feedback token
    (MNISTCL_FEEDBACK_TOKEN, or the one `mnistcl serve` generated in <home>/secrets).

    Labels are written once: the same labels again change nothing; different ones are refused (409)
    and kept for review.

    Example:

      mnistcl feedback 3f2a9c0e5b7d4e1fa2b3c4d5e6f70812 1 2 5
    """
    import httpx

    from serving.client import ModelServer, ServerError

    settings = _settings(ctx)
    base = url or f"http://127.0.0.1:{settings.serve_port}"
    try:
        with ModelServer(base, feedback_token=settings.feedback_token_value()) as server:
            tags = server.feedback(request_id, labels)["meta"]["tags"]
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server at {base}: {exc} (start it with `mnistcl serve`)")
    except ServerError as exc:
        _fail(f"server answered {exc.status}: {exc.text[:500]}", code=1)
    console.print(f"request {tags['request_id']}: {int(tags['correct'])} of {int(tags['labelled'])} predicted right; "
                  f"labelled by {tags.get('labeller')}")


@app.command("smoke")
def smoke(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Server URL (default http://127.0.0.1:SERVE_PORT); e.g. the staging ingress.")] = None,
    digits: Annotated[int, typer.Option(min=1, help="Real MNIST test digits to send.")] = 64,
    per_request: Annotated[int, typer.Option(min=1, max=64, help="Digits per request.")] = 4,
    min_accuracy: Annotated[float, typer.Option(min=0, max=1, help="Fail below this accuracy.")] = 0.9,
    expect_version: Annotated[str | None, typer.Option(help="Fail unless every answer comes from this model version.")] = None,
) -> None:
    """Smoke-test a running model server with real MNIST test digits: every request answered,
    accuracy at least --min-accuracy, and (optionally) the expected model version.

    Example:

      mnistcl smoke --url https://staging.example.com/seldon/mnist-staging/mnist-continual --expect-version m7
    """
    import httpx

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from serving.client import ModelServer, ServerError

    settings = _settings(ctx)
    base = (url or f"http://127.0.0.1:{settings.serve_port}").rstrip("/")
    x, y = read_mnist_csv(find_mnist_csvs()[1], "test")
    idx = np.random.default_rng(0).choice(len(y), digits, replace=False)
    right, versions, failures = 0, set(), []
    with ModelServer(base, predict_token=settings.predict_token_value()) as server:
        for i in range(0, digits, per_request):
            batch = idx[i:i + per_request]
            try:
                tags = server.predict(x[batch])
            except httpx.HTTPError as exc:
                _fail(f"no answer from {base}: {exc}")
            except ServerError as exc:
                failures.append(f"HTTP {exc.status}: {exc.text[:200]}")
                continue
            right += sum(int(d) == int(t) for d, t in zip(tags["digits"], y[batch], strict=True))
            versions.add(tags["model_version"])
    answered = digits - sum(per_request for _ in failures)
    acc = right / max(answered, 1)
    console.print(f"{base}: {answered}/{digits} digits answered, accuracy {acc:.3f}, model versions {sorted(versions)}")
    problems = failures[:3]
    if acc < min_accuracy:
        problems.append(f"accuracy {acc:.3f} is below {min_accuracy}")
    if expect_version and versions != {expect_version}:
        problems.append(f"expected every answer from {expect_version}, got {sorted(versions)}")
    if problems:
        _fail("smoke test failed: " + "; ".join(problems))
    console.print("[green]smoke test passed[/green]")


@pred_app.command("export")
def predictions_export(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="ISO time or age (30m, 6h, 7d). Default: everything.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv (label columns + 784 pixels) or npz.")] = ExportFormat.csv,
    labelled_only: Annotated[bool, typer.Option("--labelled-only", help="Only inputs whose true label came back.")] = False,
) -> None:
    """Download logged inputs and outputs (the "download as CSV and retrain" path).

    CSV columns: request_id, item, time, model_version, digit, confidence, feedback, p0..p9,
    then 784 pixel columns 1x1..28x28 (0-255), MNIST's layout.

    Example:

      mnistcl predictions export --since 7d --format csv -o last-week.csv
    """
    from mnistcl.predictions import read_predictions, write_csv

    settings = _settings(ctx)
    fmt = value(fmt)
    rows = read_predictions(settings.predictions_db_path, since=_parse_since(since), labelled_only=labelled_only)
    if fmt == "csv":  # streamed: one batch of rows in memory, whatever the size of the log
        if out:
            with open(out, "w", newline="") as fh:
                n = write_csv(rows, fh)
            console.print(f"wrote {n} rows to {out}")
        else:
            write_csv(rows, sys.stdout)
    else:
        rows = list(rows)
        import numpy as np

        if not out:
            _fail("--format npz needs --out FILE")
        np.savez(out, images=np.stack([r["image"] for r in rows]) if rows else np.zeros((0, 28, 28), np.uint8),
                 labels=np.array([-1 if r["feedback"] is None else r["feedback"] for r in rows]),
                 digits=np.array([r["digit"] for r in rows]))
        console.print(f"wrote {len(rows)} rows to {out}")


@deploy_app.command("render")
def deploy_render(
    ctx: typer.Context,
    env: Annotated[str, typer.Option(help="Environment from configs/deploy.yaml: staging or prod.")] = "staging",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the YAML here (default: stdout).")] = None,
    config: Annotated[Path | None, typer.Option(help="Deploy config (default configs/deploy.yaml).")] = None,
    image: Annotated[str | None, typer.Option(help="Serving image (default: the config's), e.g. "
                                                   "<registry>/mnist-continual/serving:<commit>, the tag CI pushed.")] = None,
) -> None:
    """Render the SeldonDeployment for the champion (and the challenger as a canary), checked
    against the SeldonDeployment schema and Kubernetes' PodSpec schema before it is written.

    Example:

      mnistcl deploy render --env prod -o seldondeployment.yaml
    """
    from deployment.deploy import DeployError, check_seldon_deployment, dump, render
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        champion = reg.resolve("champion")
        challenger = reg.alias("challenger")
        docs = render(env, champion, challenger if challenger != champion else None, path=config, image=image)
        check_seldon_deployment(docs[-1])
    except (DeployError, RegistryError) as exc:
        _fail(str(exc))
    text = dump(docs)
    if out:
        out.write_text(text)
        console.print(f"wrote {out}: champion {champion}" + (f", challenger {challenger} (canary)" if challenger else ""))
    else:
        sys.stdout.write(text)
