"""Prometheus configs, rules and rule tests, and Grafana provisioning and dashboards: data
files only, shipped as package data so an installed `switchyard` finds them."""
