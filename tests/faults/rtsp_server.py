#!/usr/bin/python3
"""A real RTSP server that loops a video file, for the fault tests.

Run it with the Debian interpreter (``/usr/bin/python3``): it needs ``gi`` and the
GStreamer RTSP server typelib, which are system packages (``scripts/install-system-deps.sh``).

    /usr/bin/python3 tests/faults/rtsp_server.py --file samples/vtest.avi --port 0

When ready it prints the bound URL (``rtsp://127.0.0.1:PORT/stream``) as one stdout line.
Signals: SIGUSR1 stalls the stream (server and RTSP session alive, no RTP), SIGUSR2 resumes
it; each is acknowledged by a ``stalled`` or ``resumed`` stdout line once applied (to live
sessions and to any opened later). SIGTERM/SIGINT stop the server cleanly. The listening
socket is bound with SO_REUSEADDR (GstRTSPServer does it), so a killed server can be restarted
on the same port at once.

Two pipelines, so the file loops with continuous timestamps:
``filesrc ! decodebin ! videoconvert ! intervideosink`` plays the file in real time and seeks
back to 0 on EOS; the shared RTSP media reads from ``intervideosrc``, which emits frames at a
steady rate on its own clock whatever the file pipeline does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

CHANNEL = "lepton-rtsp-test"
REQUIRED_ELEMENTS = (
    "filesrc",
    "decodebin",
    "videoconvert",
    "intervideosink",
    "intervideosrc",
    "valve",
    "x264enc",
    "rtph264pay",
)


def _log(message: str) -> None:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)


class LoopingRtspServer:
    """One RTSP mount that serves ``path`` forever and can be stalled and resumed."""

    def __init__(self, path: Path, port: int, mount: str, fps: int) -> None:
        self.path = path
        self.port = port
        self.mount = mount
        self.fps = fps
        self.stalled = False
        self.exit_code = 0
        self.loop = GLib.MainLoop()
        self.player: Gst.Pipeline | None = None
        # Media objects currently in use; each removes itself when it is unprepared.
        self.medias: set[GstRtspServer.RTSPMedia] = set()

    # -- file playback --------------------------------------------------------------------

    def start_player(self) -> None:
        """Play the file into the inter-video channel; loop on EOS."""
        player = Gst.Pipeline.new("player")
        src = Gst.ElementFactory.make("filesrc")
        src.set_property("location", str(self.path))
        decode = Gst.ElementFactory.make("decodebin")
        convert = Gst.ElementFactory.make("videoconvert")
        sink = Gst.ElementFactory.make("intervideosink")
        sink.set_property("channel", CHANNEL)
        for element in (src, decode, convert, sink):
            player.add(element)
        src.link(decode)
        convert.link(sink)

        def on_pad_added(_element: Gst.Element, pad: Gst.Pad) -> None:
            caps = pad.get_current_caps() or pad.query_caps(None)
            if caps.get_size() and caps.get_structure(0).get_name().startswith("video/"):
                sink_pad = convert.get_static_pad("sink")
                if not sink_pad.is_linked():
                    pad.link(sink_pad)

        decode.connect("pad-added", on_pad_added)
        bus = player.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_player_message)
        self.player = player
        if player.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(f"cannot play {self.path}")

    def _on_player_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        assert self.player is not None
        if message.type == Gst.MessageType.EOS:
            # A flushing seek restarts the file; intervideosrc repeats the last frame meanwhile,
            # so the RTSP stream's timestamps stay continuous.
            self.player.seek_simple(
                Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0
            )
        elif message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            _log(f"playback error: {err.message} ({debug})")
            self.exit_code = 1
            self.loop.quit()

    # -- RTSP -----------------------------------------------------------------------------

    def launch_line(self) -> str:
        """The shared media's pipeline: steady-rate raw video, a valve, H.264, RTP."""
        gop = max(1, self.fps)  # one keyframe a second: a new client decodes within ~1 s
        return (
            f"( intervideosrc channel={CHANNEL} ! video/x-raw,framerate={self.fps}/1"
            " ! videoconvert ! video/x-raw,format=I420"
            " ! valve name=v drop=false"
            f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} threads=2"
            " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )

    def start_server(self) -> str:
        """Bind 127.0.0.1:port, attach to the main loop and return the stream URL."""
        server = GstRtspServer.RTSPServer()
        server.set_address("127.0.0.1")
        server.set_service(str(self.port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(self.launch_line())
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media_configure)
        server.get_mount_points().add_factory(self.mount, factory)
        if server.attach(None) == 0:
            raise RuntimeError(f"cannot bind 127.0.0.1:{self.port}")
        self.server = server  # keep a reference for the main loop's lifetime
        return f"rtsp://127.0.0.1:{server.get_bound_port()}{self.mount}"

    def _on_media_configure(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        self.medias.add(media)
        media.connect("unprepared", self.medias.discard)
        self._apply_valve(media)

    def _apply_valve(self, media: GstRtspServer.RTSPMedia) -> None:
        valve = media.get_element().get_by_name("v")
        if valve is not None:
            valve.set_property("drop", self.stalled)

    def set_stalled(self, stalled: bool) -> bool:
        """Signal handler: open or close the valve of every live media."""
        self.stalled = stalled
        for media in list(self.medias):
            self._apply_valve(media)
        # The acknowledgement on stdout lets the caller wait until the valve has switched.
        print("stalled" if stalled else "resumed", flush=True)
        # Returning SOURCE_CONTINUE keeps the handler; otherwise the next signal kills us.
        return GLib.SOURCE_CONTINUE

    def quit(self) -> bool:
        """Signal handler for SIGTERM/SIGINT."""
        self.loop.quit()
        return GLib.SOURCE_CONTINUE

    def watch_stdin(self) -> None:
        """Quit when stdin reaches EOF, so a test run that dies leaves no server behind."""

        def on_stdin(fd: int, _condition: GLib.IOCondition) -> bool:
            if os.read(fd, 4096):
                return GLib.SOURCE_CONTINUE
            _log("stdin closed; exiting")
            self.loop.quit()
            return GLib.SOURCE_REMOVE

        GLib.unix_fd_add_full(
            GLib.PRIORITY_DEFAULT,
            sys.stdin.fileno(),
            GLib.IOCondition.IN | GLib.IOCondition.HUP,
            on_stdin,
        )

    def run(self) -> int:
        """Start everything, print the URL, run until a stop signal."""
        self.start_player()
        url = self.start_server()
        for signum, handler in (
            (signal.SIGUSR1, lambda: self.set_stalled(True)),
            (signal.SIGUSR2, lambda: self.set_stalled(False)),
            (signal.SIGTERM, self.quit),
            (signal.SIGINT, self.quit),
        ):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, handler)
        print(url, flush=True)
        try:
            self.loop.run()
        finally:
            if self.player is not None:
                self.player.set_state(Gst.State.NULL)
        return self.exit_code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, type=Path, help="video file to loop")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--mount", default="/stream", help="mount point (default /stream)")
    parser.add_argument("--fps", type=int, default=10, help="output frame rate (default 10)")
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when stdin reaches EOF (the parent's pipe closed: it exited or died)",
    )
    args = parser.parse_args(argv)
    if not args.mount.startswith("/"):
        parser.error(f"--mount must start with '/', got {args.mount!r}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    if not 1 <= args.fps <= 120:
        parser.error(f"--fps must be 1..120, got {args.fps}")
    if not args.file.is_file():
        parser.error(f"--file {args.file} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    Gst.init(None)
    missing = [name for name in REQUIRED_ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        _log(
            f"missing GStreamer elements: {', '.join(missing)} (run scripts/install-system-deps.sh)"
        )
        return 2
    server = LoopingRtspServer(args.file.resolve(), args.port, args.mount, args.fps)
    if args.exit_with_stdin:
        server.watch_stdin()
    try:
        return server.run()
    except RuntimeError as err:
        _log(str(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
