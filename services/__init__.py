"""Switchyard services: the model pipeline, Triton launcher and offline batch job."""
