"""Mel images in TensorBoard: matplotlib's viridis colour map, PNG encoded by Pillow
(through tensorboardX), low frequencies at the bottom."""

import glob
import io
import struct

import numpy as np

from svcjax.train.metric_writer import MetricWriter, mel_image

VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 36)   # viridis at 0 and 1, 8-bit


def test_mel_image_orientation_and_colours():
    mel = np.zeros((5, 3), np.float32)     # (frames, mels)
    mel[:, 0] = 4.0                        # the lowest mel bin loud ...
    mel[2, 2] = 2.0                        # ... one mid-value cell in the highest bin
    img = mel_image(mel)
    assert img.shape == (3, 5, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[-1], np.tile(VIRIDIS_HIGH, (5, 1)))   # bin 0 at bottom
    np.testing.assert_array_equal(img[1], np.tile(VIRIDIS_LOW, (5, 1)))
    mid = img[0, 2]
    assert tuple(mid) not in (VIRIDIS_LOW, VIRIDIS_HIGH) and mid[1] > 100  # viridis 0.5: teal
    np.testing.assert_array_equal(mel_image(np.full((4, 2), 7.0)), np.tile(VIRIDIS_LOW, (2, 4, 1)))
    nan = mel.copy()
    nan[0, 1] = np.nan
    assert mel_image(nan).shape == (3, 5, 3)


def test_image_event_decodes_to_the_mel_image(tmp_path):
    from PIL import Image
    from tensorboardX.proto import event_pb2

    mel = np.random.RandomState(0).randn(40, 16).astype(np.float32)
    w = MetricWriter(str(tmp_path))
    w.image(3, "val/mel_0", mel)
    w.close()
    (path,) = glob.glob(str(tmp_path / "tensorboard" / "events.*"))
    data, pos, images = open(path, "rb").read(), 0, []
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
        images += [(ev.step, v) for v in ev.summary.value if v.WhichOneof("value") == "image"]
    ((step, value),) = images
    assert step == 3 and value.tag == "val/mel_0"
    assert (value.image.height, value.image.width) == (16, 40)
    decoded = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(decoded, mel_image(mel))
