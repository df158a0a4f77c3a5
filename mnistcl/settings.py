"""One typed settings object, loaded once at the entry point.

Sources, later ones winning: the embedded defaults below, a YAML file (``--config`` or
``MNISTCL_CONFIG``), then ``MNISTCL_*`` environment variables (nested fields with ``__``,
e.g. ``MNISTCL_ALERTS__SMTP_HOST``). Nothing here touches the disk until
:func:`load_settings` is called, and even then only to read the YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mnistcl.credentials import local_secret, parse_tokens


class ConfigError(ValueError):
    """The configuration file or an environment variable is invalid."""


class Retention(BaseModel):
    """Ages after which stored things are deleted (days; None keeps them forever). Applied by
    `mnistcl retention apply` and the scheduled `retention` deployment."""

    model_config = ConfigDict(extra="forbid")

    prediction_images_days: float | None = Field(
        default=90, gt=0, description="Logged inputs and outputs; never one the monitoring has not checked yet or "
        "whose label no dataset version holds yet.")
    rejected_days: float | None = Field(default=30, gt=0, description="Rejected payloads' reasons.")
    reports_days: float | None = Field(default=30, gt=0, description="Check reports, drift HTML, retraining work folders.")
    outbox_days: float | None = Field(default=30, gt=0, description="Alert emails written to the outbox.")
    events_days: float | None = Field(default=90, gt=0, description="Lines of the local event log.")

    @field_validator("*", mode="before")
    @classmethod
    def _forever(cls, v: Any) -> Any:
        """``never`` (or null, none, empty: how an environment variable says None) keeps forever."""
        return None if isinstance(v, str) and v.strip().lower() in {"", "null", "none", "never"} else v


class Settings(BaseSettings):
    """Everything the system needs to know about where it runs."""

    model_config = SettingsConfigDict(
        env_prefix="MNISTCL_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Field(
        default=Path(".mnistcl"),
        description="Local working folder (databases, W&B offline runs, reports, outbox). "
        "Relative paths are resolved against the current directory.",
    )
    storage_url: str = Field(
        default="",
        description="Where datasets and models live: a local folder or s3://bucket/prefix. "
        "Empty means <home>/store.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (MinIO, moto, ...). None means AWS itself.",
    )
    experiments_db: str = Field(
        default="",
        description="Experiment store: a SQLite file or a postgresql:// URL (the cluster: every trial is its "
                    "own Job). Empty: <home>/experiments.db",
    )
    predictions_db: str = Field(
        default="",
        description="Prediction log: a SQLite file or a postgresql:// URL. Empty: <home>/predictions.db",
    )
    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API to announce events to. None: fall back to PREFECT_API_URL, "
        "and without either, events go to the local event log only.",
    )
    seed: int = Field(
        default=0,
        description="One seed for everything random: dataset splits, replay sampling, training and the scenario.",
    )
    serve_host: str = Field(default="127.0.0.1", description="Address the model server binds.")
    serve_port: int = Field(default=9000, description="Model server REST port.")
    serve_metrics_port: int = Field(default=6000, description="Model server Prometheus metrics port.")
    wandb_mode: str = Field(
        default="offline",
        description="W&B mode: offline (default, nothing leaves the machine), online, disabled.",
    )
    wandb_project: str = "mnist-continual"
    monitoring_config: str = Field(
        default="",
        description="Monitoring rules, drift and trigger settings (YAML). Empty: configs/monitoring.yaml.",
    )
    smtp_host: str = Field(
        default="",
        description="SMTP server for alert emails. Empty: alerts are written as .eml files to <home>/outbox.",
    )
    smtp_port: int = Field(default=587, description="SMTP port (587 STARTTLS, 465 TLS, 25 plain).")
    smtp_tls: str = Field(default="starttls", description="SMTP security: starttls, ssl or none.")
    smtp_user: str = Field(default="", description="SMTP login; empty for none.")
    smtp_password: SecretStr = Field(default=SecretStr(""), description="SMTP password (use MNISTCL_SMTP_PASSWORD).")
    alert_from: str = Field(default="mnist-continual@localhost", description="Sender of alert emails.")
    alert_to: str = Field(default="data-scientist@localhost",
                          description="Recipients of alert emails, comma-separated.")
    relay_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token the Alertmanager relay requires on every POST (use MNISTCL_RELAY_TOKEN); "
                    "empty: none (the local default, 127.0.0.1 only).",
    )
    feedback_token: SecretStr = Field(
        default=SecretStr(""),
        description="The token this installation's clients (the scenario, `mnistcl feedback`, `serving.client.ModelServer`) send with feedback "
                    "(use MNISTCL_FEEDBACK_TOKEN); empty: the local one, generated once as <home>/secrets/feedback-token.",
    )
    feedback_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Who the model server started by `mnistcl serve` takes feedback from: `labeller:token` entries, "
                    "comma-separated (use MNISTCL_FEEDBACK_TOKENS); the labeller is recorded with each label. "
                    "Empty: `<feedback_labeller>:<feedback token>`.",
    )
    feedback_labeller: str = Field(default="local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$",
                                   description="The labeller named by the local feedback token.")
    predict_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="`labeller:token` entries the model server requires on predict (use MNISTCL_PREDICT_TOKENS); "
                    "empty: predict is open (behind the cluster's gateway). Separate from the feedback tokens.",
    )
    retention: Retention = Field(default_factory=Retention,
                                 description="Retention ages (MNISTCL_RETENTION__REPORTS_DAYS=7, ...).")
    pushgateway_url: str = Field(
        default="",
        description="Prometheus Pushgateway (http://host:9091) that each monitoring check pushes its gauges to "
                    "(job mnistcl_monitor); empty: only the textfile <home>/monitoring/metrics.prom.",
    )
    k8s_namespace: str = Field(
        default="",
        description="The Kubernetes namespace the system runs in (set by Terraform's mnistcl-settings ConfigMap): "
                    "the monitor's pushed gauges carry it as their `namespace` label, so that their alerts reach "
                    "this environment's AlertmanagerConfig (the operator matches on the namespace).",
    )

    retrain_lease_seconds: float = Field(
        default=600.0, gt=0,
        description="The retraining lease: renewed every third of this while a retraining runs; the lease of a "
                    "holder that died (a killed pod) frees after this long.",
    )
    require_shared_state: bool = Field(
        default=False,
        description="Refuse to run when state would live on this machine's disk (a local storage folder, a SQLite "
                    "prediction log or experiment store): set in the training image, where the home is a pod's scratch.",
    )

    @model_validator(mode="after")
    def _check_shared_state(self) -> Settings:
        if not self.require_shared_state:
            return self
        local = []
        if not self.store_url.startswith("s3://"):
            local.append(f"storage_url ({self.store_url or 'empty'}: set MNISTCL_STORAGE_URL=s3://bucket/prefix)")
        for name, where in (("predictions_db", self.predictions_db), ("experiments_db", self.experiments_db)):
            if not where.startswith(("postgresql://", "postgres://")):
                local.append(f"{name} ({'empty' if not where else 'not PostgreSQL'}: set MNISTCL_{name.upper()}="
                             "postgresql://...)")
        if local:
            raise ValueError("require_shared_state is on, but these would keep state on this pod's disk: "
                             + "; ".join(local))
        return self

    @field_validator("pushgateway_url")
    @classmethod
    def _check_pushgateway_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"pushgateway_url must start with http:// or https://, not {v!r}")
        return v.rstrip("/")

    @field_validator("smtp_tls")
    @classmethod
    def _check_smtp_tls(cls, v: str) -> str:
        if v not in {"starttls", "ssl", "none"}:
            raise ValueError(f"smtp_tls must be starttls, ssl or none, not {v!r}")
        return v

    @field_validator("wandb_mode")
    @classmethod
    def _check_wandb_mode(cls, v: str) -> str:
        if v not in {"offline", "online", "disabled"}:
            raise ValueError(f"wandb_mode must be offline, online or disabled, not {v!r}")
        return v

    # ---- derived locations (pure functions of the fields; nothing created here) ----
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def store_url(self) -> str:
        return self.storage_url or str(self.home_dir / "store")

    @property
    def events_log(self) -> Path:
        return self.home_dir / "events.jsonl"

    @property
    def experiments_location(self) -> str:
        """A SQLite path or a postgresql:// URL."""
        return self.experiments_db or str(self.home_dir / "experiments.db")

    @property
    def predictions_db_path(self) -> str:
        """A SQLite path or a postgresql:// URL."""
        return self.predictions_db or str(self.home_dir / "predictions.db")

    @property
    def outbox(self) -> Path:
        return self.home_dir / "outbox"

    @property
    def monitoring_dir(self) -> Path:
        return self.home_dir / "monitoring"

    def feedback_token_value(self) -> str:
        """The feedback token clients send (generated into the home on first use)."""
        return self.feedback_token.get_secret_value() or local_secret(self.home_dir, "feedback-token")

    def relay_token_value(self) -> str:
        """The token the Alertmanager relay requires (generated into the home on first use)."""
        return self.relay_token.get_secret_value() or local_secret(self.home_dir, "relay-token")

    def feedback_tokens_value(self) -> str:
        """The token list the model server is started with."""
        return self.feedback_tokens.get_secret_value() or f"{self.feedback_labeller}:{self.feedback_token_value()}"

    def predict_token_value(self) -> str | None:
        """The token clients send with predict: the first of ``predict_tokens`` (None: open)."""
        tokens = parse_tokens(self.predict_tokens.get_secret_value(), what="MNISTCL_PREDICT_TOKENS")
        return next(iter(tokens), None)

    @property
    def prefect_api(self) -> str | None:
        return self.prefect_api_url or os.environ.get("PREFECT_API_URL") or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file, which arrives as init kwargs.
        return (env_settings, init_settings)


def read_yaml(path: Path, what: str, error: type[Exception] = ValueError) -> Any:
    """A YAML file's content (empty: {}); ``error`` names ``what`` and the path when the file is
    missing or not YAML. Every configuration file of the project is read through here."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "config file", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def load_settings(config: Path | str | None = None) -> Settings:
    """Build the settings: defaults, then the YAML file, then MNISTCL_* variables."""
    from pydantic import ValidationError

    path = config or os.environ.get("MNISTCL_CONFIG")
    values = _read_yaml(Path(path)) if path else {}
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = f"config file {path} or " if path else ""
        raise ConfigError(f"invalid settings in {where}MNISTCL_* variables:\n{exc}") from exc
