"""Monitoring of production inputs and predictions: features, rules, drift, alerts, triggers.

  features      compact per-image features (NumPy)
  rules         configs/monitoring.yaml: input rules, prediction rules, drift and trigger settings
  drift         Evidently on features (the only module importing Evidently)
  state         hysteresis, cooldown, the retraining lock
  alerts        email through SMTP, or .eml files in the outbox
  check         one monitoring check of the next window
  relay         Alertmanager webhook -> Prefect events
  alertmanager  the Alertmanager configuration (generated)
  prometheus/   alerting rules and their promtool unit tests
"""
