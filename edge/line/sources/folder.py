"""folder:PATH[?fps=10&loop=1]: replay the images of a folder (and its sub-folders) in name
order, as grey frames; `fps` paces them (0: as fast as they are read), `loop` starts over."""

import os
import time

from edge.imaging.imagefolder import image_files
from edge.imaging.preprocess import load_image, to_grey
from edge.line.sources import Frame, number
from protocol.errors import BinsortError

PARAMS = ("fps", "loop")


class FolderSource:
    def __init__(self, path: str, params: dict):
        self.paths = image_files([path]) if path else []
        if not self.paths:
            raise BinsortError("folder:%s holds no images" % path)
        self.fps = number(params, "fps", 0.0, float, 0.0, "folder", 1000)
        self.loop = params.get("loop", "0") not in ("0", "false", "no")
        self.index = 0  # the next file to read
        self.frames = 0  # frames returned
        self.skipped, self.last_skipped = 0, None
        self.next_at = time.monotonic()

    def read(self):
        """The next readable image; one that cannot be read is skipped and counted
        (`skipped`, `last_skipped`), so a bad file never stops a replay. BinsortError only
        when a whole pass over the folder found nothing readable."""
        for _ in range(len(self.paths)):
            if self.index >= len(self.paths) and not self.loop:
                return None
            path = self.paths[self.index % len(self.paths)]
            self.index += 1
            if self.fps:
                self.next_at += 1.0 / self.fps
                time.sleep(max(0.0, self.next_at - time.monotonic()))
            try:
                grey = to_grey(load_image(path))
            except BinsortError as e:
                self.skipped += 1
                self.last_skipped = "%s: %s" % (os.path.basename(path), e)
                continue
            self.frames += 1
            return Frame(grey, time.monotonic(), self.frames - 1, {"path": path})
        if self.index >= len(self.paths) and not self.loop:
            return None
        raise BinsortError("folder: none of the %d images could be read" % len(self.paths))

    def close(self) -> None:
        pass


def check(rest: str, params: dict) -> None:
    """The URL's values, and the folder: one that does not exist or holds no images is a
    mistake in the config, not a camera to wait for."""
    FolderSource(rest, params)


def open_source(rest: str, params: dict, **kwargs):
    return FolderSource(rest, params)
