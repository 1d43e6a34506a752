"""Stages: functions `stage(model, config) -> model` that copy by default (`*_` names work in place)."""
