"""Alerts: change events matched by the operator's rules, delivered once to Slack or a webhook."""
