"""The torch-free preprocessing: the exact 28->32 resize shared by training and serving, and real-world images
normalised the way MNIST was made."""

import io

import numpy as np
import pytest
from PIL import Image

from ignite_lenet.mnist.digits import ImageTooLarge, NoDigitFound, normalize_digit, read_gray
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import _exact_dtype, fixed_point_weights, resize, resize_weights, to_model_input


@pytest.fixture(scope="module")
def all_mnist(mnist_dir):
    train, _ = read_mnist(mnist_dir, "train", download=False)
    test, test_labels = read_mnist(mnist_dir, "test", download=False)
    return np.concatenate([train, test]), test, test_labels


def test_resize_is_bit_identical_to_the_training_tensors_on_all_70000_mnist_images(all_mnist):
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF


    images = all_mnist[0]
    ours = to_model_input(images)
    # what training used before this module existed: torchvision's uint8 antialiased resize, then / 255
    theirs = TF.resize(torch.from_numpy(images)[:, None], [32, 32], interpolation=InterpolationMode.BILINEAR,
                       antialias=True).float().div_(255).numpy()
    assert ours.shape == (70000, 1, 32, 32) and ours.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_resize_matches_pillow_and_torchvision_on_random_images():
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    images = np.random.default_rng(0).integers(0, 256, (500, 28, 28), dtype=np.uint8)
    ours = resize(images)
    pillow = np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR)) for i in images])
    tv = TF.resize(torch.from_numpy(images)[:, None], [32, 32], interpolation=InterpolationMode.BILINEAR,
                   antialias=True)[:, 0].numpy()
    assert np.array_equal(ours, pillow) and np.array_equal(ours, tv)
    # other enlargements too (the arithmetic is general; reductions may differ from Pillow by one level)
    odd = np.random.default_rng(1).integers(0, 256, (20, 17, 23), dtype=np.uint8)
    pillow = np.stack([np.asarray(Image.fromarray(i).resize((40, 30), Image.BILINEAR)) for i in odd])
    assert np.array_equal(resize(odd, (30, 40)), pillow)


def test_the_coefficients_are_sixteenths_so_float32_is_exact():
    coefficients, bits = fixed_point_weights(28, 32)
    assert bits == 4 and coefficients.shape == (32, 28) and (coefficients.sum(axis=1) == 16).all()
    assert (np.count_nonzero(coefficients, axis=1) <= 2).all()
    assert _exact_dtype(coefficients, bits) is np.float32
    np.testing.assert_allclose(resize_weights(28, 32).sum(axis=1), 1.0)


def test_the_weights_are_computed_once_per_size_and_read_only():
    # a server resizes every request's digit: the weights come from a cache, the same arrays each time
    for cached, uncached in ((resize_weights, resize_weights.__wrapped__),
                             (lambda i, o: fixed_point_weights(i, o)[0], lambda i, o: fixed_point_weights.__wrapped__(i, o)[0])):
        first = cached(28, 32)
        assert cached(28, 32) is first and not first.flags.writeable
        assert np.array_equal(first, uncached(28, 32))
        with pytest.raises(ValueError):
            first[0, 0] = 1
    assert fixed_point_weights(28, 32)[1] == fixed_point_weights.__wrapped__(28, 32)[1] == 4
    with pytest.raises(ValueError, match="positive"):
        resize_weights(0, 32)


def test_float_images_and_bad_shapes():
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    out = to_model_input(x)
    assert out.shape == (3, 1, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(to_model_input(x[:, None]), out)
    assert np.abs(out - to_model_input(np.rint(x * 255).astype(np.uint8))).max() < 3 / 255
    for bad in (np.zeros((2, 3, 28, 28), np.uint8), np.zeros((28, 28), np.uint8), np.zeros((2, 28, 28), np.int64)):
        with pytest.raises(ValueError):
            to_model_input(bad)
    assert to_model_input(np.zeros((0, 28, 28), np.uint8)).shape == (0, 1, 32, 32)


def _png(image: Image.Image, fmt: str = "PNG") -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    buffer.seek(0)
    return buffer


def _variants(digit: np.ndarray, rng: np.random.Generator) -> dict[str, Image.Image]:
    """The same MNIST digit as users have it: dark on white, small on a page, off-centre, transparent canvases."""
    big = np.asarray(Image.fromarray(255 - digit).resize((84, 84), Image.BILINEAR))
    page = np.full((300, 400), 255, np.uint8)
    r, c = rng.integers(0, 272), rng.integers(0, 372)
    page[r : r + 28, c : c + 28] = 255 - digit  # a digit taking a few % of a white page, anywhere on it
    paper = np.full((360, 270), 235, np.uint8)  # grey paper, a larger digit off-centre
    ink = np.asarray(Image.fromarray(digit).resize((84, 84), Image.BILINEAR)).astype(np.int64)
    r, c = rng.integers(0, 276), rng.integers(0, 186)
    paper[r : r + 84, c : c + 84] = 235 - ink * 200 // 255
    rgba = np.zeros((100, 100, 4), np.uint8)  # black ink on a transparent canvas (its RGB all black)
    rgba[..., 3] = np.asarray(Image.fromarray(digit).resize((100, 100), Image.BILINEAR))
    la = np.zeros((56, 56, 2), np.uint8)  # white ink on a transparent canvas
    la[..., 0] = 255
    la[..., 1] = np.asarray(Image.fromarray(digit).resize((56, 56), Image.BILINEAR))
    return {"dark on white, 84x84": Image.fromarray(big), "small on a 400x300 page": Image.fromarray(page),
            "grey paper, off-centre": Image.fromarray(paper), "RGBA, black ink": Image.fromarray(rgba, "RGBA"),
            "LA, white ink": Image.fromarray(la, "LA"),
            "JPEG dark on white": Image.open(_png(Image.fromarray(big), "JPEG"))}


def test_real_world_renderings_of_mnist_digits_are_classified_as_well_as_the_originals(exported, all_mnist):
    from ignite_lenet.inference.onnx_runtime import OnnxClassifier

    clf = OnnxClassifier(exported.files["onnx"])
    _, images, labels = all_mnist
    images, labels = images[:300], labels[:300]
    original = clf.predict(images)[0]
    rng = np.random.default_rng(0)
    predicted: dict[str, list[int]] = {}
    for digit in images:
        for name, image in _variants(digit, rng).items():
            normalised, _ = normalize_digit(read_gray(_png(image)))
            predicted.setdefault(name, []).append(int(clf.predict(normalised[None])[0][0]))
    baseline = (original == labels).mean()
    for name, got in predicted.items():
        got = np.array(got)
        # a briefly trained (~90%) model: as accurate as on the originals, and the same answer on >= 95% of them
        assert (got == labels).mean() >= baseline - 0.015, name
        assert (got == original).mean() >= 0.95, name


@pytest.mark.parametrize("mode", ["L", "1", "P", "P+transparency", "I;16", "I", "F", "RGB", "CMYK", "LA", "RGBA"])
def test_every_pillow_mode_gives_the_same_digit(all_mnist, mode):
    digit = all_mnist[1][0]
    page = Image.fromarray(255 - digit).resize((56, 56), Image.BILINEAR)
    reference, inverted = normalize_digit(read_gray(_png(page)))
    assert inverted
    array = np.asarray(page)
    if mode == "1":
        image = page.point(lambda v: 255 if v > 127 else 0).convert("1")
    elif mode == "I;16":
        image = Image.fromarray(array.astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(array.astype(np.int32) * 100, "I")  # an unusual range: stretched
    elif mode == "F":
        image = Image.fromarray(array.astype(np.float32) / 255, "F")
    elif mode == "P+transparency":  # the white page is the transparent palette entry
        image = page.convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
    else:
        image = page.convert(mode)
    fmt = "TIFF" if mode in ("F", "I", "CMYK") else "PNG"
    got, inverted = normalize_digit(read_gray(_png(image, fmt)))
    assert inverted and got.shape == (28, 28) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - reference).mean() < (12 if mode == "1" else 2), mode


@pytest.mark.parametrize("gray, message", [
    (np.ones((64, 64)), "blank or uniform"),
    (np.full((28, 28), 0.4), "blank or uniform"),
    (np.zeros((1, 1)), "too small"),
    (np.zeros((5, 300)), "too small"),
    (np.pad(np.ones((2, 2)), 499), "specks"),
])
def test_images_without_a_digit_are_no_digit_found(gray, message):
    with pytest.raises(NoDigitFound, match=message):
        normalize_digit(gray)


def test_noise_on_a_blank_page_is_no_digit():
    page = 0.95 + np.random.default_rng(0).normal(0, 0.02, (200, 200))
    with pytest.raises(NoDigitFound):
        normalize_digit(np.clip(page, 0, 1))


def test_an_mnist_digit_comes_back_exactly_and_centred_digits_stay_centred(all_mnist):
    digit = all_mnist[1][0]
    assert np.array_equal(normalize_digit(digit / 255)[0], digit)
    assert np.array_equal(normalize_digit((255 - digit) / 255)[0], digit)  # dark on light: inverted
    big = np.asarray(Image.fromarray(digit).resize((280, 280), Image.BILINEAR)) / 255
    normalised, inverted = normalize_digit(big)
    mass = normalised.astype(float)
    centre = [(mass.sum(axis=1 - a) * np.arange(28)).sum() / mass.sum() for a in (0, 1)]
    assert not inverted and np.allclose(centre, 14, atol=0.75)
    rows, cols = np.nonzero(normalised)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 20


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (8000, 6000)).save(path)  # 48 megapixels in a few kilobytes
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageTooLarge, match="above the limit"):
        read_gray(path)
    with pytest.raises(ImageTooLarge, match="^upload: 800x600 pixels is above the limit of 100,000"):  # bytes too
        read_gray(_png(Image.new("L", (800, 600))), max_pixels=100_000, name="upload")


def test_bytes_in_memory_are_read_like_files_and_garbage_is_one_message(all_mnist):
    digit = all_mnist[1][0]
    np.testing.assert_array_equal(read_gray(_png(Image.fromarray(digit))) * 255, digit)
    png = _png(Image.fromarray(digit)).getvalue()
    for garbage in (b"", b"\x89PNG\r\n\x1a\n", png[: len(png) // 2], b"GIF89a" + bytes(200), bytes(range(256)) * 8):
        with pytest.raises(ValueError, match="^body: not a readable image") as caught:
            read_gray(io.BytesIO(garbage), name="body")
        assert not isinstance(caught.value, (ImageTooLarge, NoDigitFound))


def test_the_border_median_is_numpys_bit_for_bit():
    from ignite_lenet.mnist.digits import _median

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 108, 109, 4000):
        for values in (rng.random(size), rng.integers(0, 256, size) / 255.0, np.full(size, 0.3)):
            assert _median(values) == np.median(values)


def test_only_the_listed_formats_are_opened_and_sizes_are_checked_before_decoding():
    import struct

    from ignite_lenet.mnist.digits import IMAGE_FORMATS, open_image

    inner = _png(Image.new("1", (3000, 3000))).getvalue()  # 9 megapixels behind an ICO directory claiming 16x16
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22) + inner
    with pytest.raises(ValueError, match="not one of " + ", ".join(IMAGE_FORMATS)):
        read_gray(io.BytesIO(ico), name="icon")
    opened = open_image(_png(Image.new("L", (640, 480))), max_pixels=400_000)
    assert opened.size == (640, 480) and opened.tile  # its tiles still to decode: nothing decoded yet
    with pytest.raises(ImageTooLarge, match="640x480"):
        open_image(_png(Image.new("L", (640, 480))), max_pixels=300_000)


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(mnist_dir):
    from helpers import jpeg_with_scans, png_bytes

    from ignite_lenet.mnist.digits import MAX_JPEG_SCANS, open_image

    test, _ = read_mnist(mnist_dir, "test", download=False)
    digit = Image.fromarray(test[0]).resize((280, 280))  # a real MNIST digit, as large as a drawn one
    reference, _ = normalize_digit(read_gray(io.BytesIO(png_bytes(digit)), name="digit.png"))
    gray_scans = 6  # Pillow's progressive script for one component
    colour = png_bytes(digit.convert("RGB"), "JPEG", progressive=True)  # 10 scans
    normalized, _ = normalize_digit(read_gray(io.BytesIO(colour), name="colour.jpg"))
    assert np.abs(normalized.astype(int) - reference).mean() < 8  # the same digit, JPEG's losses aside
    # at the limit: decoded (the repeated refinement scans change its pixels, not whether it is read)
    assert read_gray(io.BytesIO(jpeg_with_scans(digit, MAX_JPEG_SCANS - gray_scans)), name="limit.jpg").shape == (280, 280)
    bomb = jpeg_with_scans(Image.new("L", (2000, 2000)), 10_000)  # 164 KB; libjpeg took 22 s to decode it
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match=f"bomb.jpg: a JPEG of 10,006 scans is above the limit of {MAX_JPEG_SCANS}"):
        open_image(io.BytesIO(bomb), name="bomb.jpg")
    with pytest.raises(ImageTooLarge, match=f"of {MAX_JPEG_SCANS + 1} scans"):
        read_gray(io.BytesIO(jpeg_with_scans(digit, MAX_JPEG_SCANS + 1 - gray_scans)), name="one.jpg")


def test_a_png_larger_than_its_pixels_can_need_is_refused_before_its_chunks_are_read(mnist_dir):
    from helpers import png_bytes, png_with_chunks

    from ignite_lenet.mnist.digits import PNG_SLACK, open_image

    test, _ = read_mnist(mnist_dir, "test", download=False)
    digit = png_bytes(test[0])
    reference, _ = normalize_digit(read_gray(io.BytesIO(digit), name="digit.png"))
    padded = png_with_chunks(digit, PNG_SLACK // 12 - 200)  # metadata within the slack: read as ever
    normalized, _ = normalize_digit(read_gray(io.BytesIO(padded), name="padded.png"))
    assert np.array_equal(normalized, reference)
    flood = png_with_chunks(digit, 300_000)  # 3.6 MB around 784 pixels: Pillow took 0.6 s to read its chunks
    with pytest.raises(ImageTooLarge, match=r"flood.png: a PNG of 3,600,\d{3} bytes for 28x28 pixels is above the "
                                            r"limit of 67,160"):
        open_image(io.BytesIO(flood), name="flood.png")
    stored = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 4), np.uint8)),
                       compress_level=0)  # uncompressed RGBA: the largest a PNG of its pixels honestly is
    assert open_image(io.BytesIO(stored)).size == (300, 300)
