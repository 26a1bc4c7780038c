"""The service: the daemon that builds the pipeline in one place, and systemd's notify protocol."""
