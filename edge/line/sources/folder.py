"""folder:PATH[?fps=10&loop=1]: replay the images of a folder (and its sub-folders) in name
order, as grey frames; `fps` paces them (0: as fast as they are read), `loop` starts over."""

import time

import numpy as np

from edge.imaging.imagefolder import image_files
from edge.line.sources import Frame, number
from protocol.errors import BinsortError


class FolderSource:
    def __init__(self, path: str, params: dict):
        self.paths = image_files([path]) if path else []
        if not self.paths:
            raise BinsortError("folder:%s holds no images" % path)
        self.fps = number(params, "fps", 0.0, float, 0.0, "folder")
        self.loop = params.get("loop", "0") not in ("0", "false", "no")
        self.index = 0
        self.next_at = time.monotonic()

    def read(self):
        from PIL import Image

        if self.index >= len(self.paths) and not self.loop:
            return None
        path = self.paths[self.index % len(self.paths)]
        if self.fps:
            self.next_at += 1.0 / self.fps
            time.sleep(max(0.0, self.next_at - time.monotonic()))
        try:
            with Image.open(path) as img:
                grey = np.asarray(img.convert("L"), dtype=np.uint8)
        except OSError as e:
            raise BinsortError("cannot read %s: %s" % (path, e)) from None
        self.index += 1
        return Frame(grey, time.monotonic(), self.index - 1, {"path": path})

    def close(self) -> None:
        pass


def open_source(rest: str, params: dict, **kwargs):
    return FolderSource(rest, params)
