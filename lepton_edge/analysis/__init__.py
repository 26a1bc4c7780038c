"""The analysing stage: per-camera state that turns detections into outcomes (tracks, zones and
lines, events with snapshots, the motion gate; inspection rules and verdicts)."""
