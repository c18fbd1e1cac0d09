"""The whole stack on one machine: `switchyard up`, `switchyard demo`, `switchyard down`."""
