"""Learned codecs: real rANS bitstreams, any size, bytes-bpp vs likelihood-bpp."""
import numpy as np
import pytest
import torch

from cdlib.bitstream import BitstreamError, pack, unpack
from cdlib.codecs import get_codec
from cdlib.codecs.learned import LearnedCodec
from cdlib.images import pad_to, to_tensor
from cdlib.losses import bpp_of_likelihoods
from cdlib.registry import create_model

SIZES = [(1, 1), (17, 33), (97, 131), (256, 256)]


def _photo(h, w):
    from skimage import data

    img = data.astronaut()
    reps = (-(-h // img.shape[0]), -(-w // img.shape[1]), 1)
    return np.ascontiguousarray(np.tile(img, reps)[:h, :w])


@pytest.fixture(scope="module")
def codecs():
    torch.manual_seed(0)
    return {n: get_codec(n, model=create_model(n, "laptop")) for n in ("factorized", "hyperprior")}


@pytest.mark.parametrize("name", ["factorized", "hyperprior"])
@pytest.mark.parametrize("hw", SIZES)
def test_roundtrip_keeps_size(codecs, name, hw):
    codec = codecs[name]
    img = _photo(*hw)
    out, data = codec.roundtrip(img, 0)
    assert out.shape == img.shape and out.dtype == np.uint8
    header, strings = unpack(data)
    assert (header.height, header.width) == hw
    assert len(strings) == (2 if name == "hyperprior" else 1)


def test_batch_equals_single(codecs):
    codec = codecs["hyperprior"]
    imgs = [_photo(64, 64), np.ascontiguousarray(_photo(64, 64)[::-1])]
    single = [codec.encode(im, 0) for im in imgs]
    assert codec.encode_batch(imgs, 0) == single


def test_wrong_checkpoint_refused(codecs):
    torch.manual_seed(1)
    other = get_codec("hyperprior", model=create_model("hyperprior", "laptop"))
    data = codecs["hyperprior"].encode(_photo(64, 64), 0)
    with pytest.raises(BitstreamError, match="checkpoint"):
        other.decode(data)


def test_missing_latent_string_refused(codecs):
    codec = codecs["hyperprior"]
    header, strings = unpack(codec.encode(_photo(64, 64), 0))
    bad = pack(header.codec, strings[:1], header.height, header.width, header.pad_h, header.pad_w,
               header.quality, header.cfg_hash)
    with pytest.raises(BitstreamError):
        codec.decode(bad)


def test_bad_quality_index(codecs):
    with pytest.raises(ValueError, match="rate-point index"):
        codecs["hyperprior"].encode(_photo(8, 8), 5)


def _zoo_hyperprior(q):
    from cdlib import zoo

    entries = sorted(zoo.entries(model="hyperprior", profile="laptop"), key=lambda e: e["config"]["lmbda"])
    assert len(entries) >= 4, "the zoo must ship the hyperprior rate points (python -m cdlib zoo build)"
    return zoo.load(entries[q]["id"])


@pytest.mark.parametrize("q", range(4))
def test_bytes_bpp_matches_likelihood_at_256(q):
    """A trained model's real rANS payload is within 2% of its likelihood estimate, either way, at 256x256.

    Above: the coder's flush bytes and its quantised CDF tables.  Below: latents in the far tails, whose
    clamped likelihood charges up to 30 bits while the coder escapes them cheaply (chapter 1, exercise 5).
    """
    model = _zoo_hyperprior(q).eval()
    codec = LearnedCodec([model], name="hyperprior")
    img = _photo(256, 256)
    data = codec.encode(img, 0)
    header, strings = unpack(data)
    payload_bpp = 8 * sum(len(s) for s in strings) / (256 * 256)
    with torch.no_grad():
        x, _, _ = pad_to(to_tensor([img]), codec.stride)
        lik_bpp = float(bpp_of_likelihoods(model(x)["likelihoods"], 256 * 256))
    assert abs(payload_bpp / lik_bpp - 1) < 0.02, (payload_bpp, lik_bpp)
    # the container overhead is reported apart and stays small
    assert header.size < 64
    # the chapters' report (cdlib.eval.stream_report) gives the same numbers
    from cdlib.eval import stream_report

    row = stream_report(codec, [img]).iloc[0]
    assert row["payload_bits"] == payload_bpp * 256 * 256 and row["header_bytes"] == header.size
    assert row["estimated_bits"] == pytest.approx(lik_bpp * 256 * 256, rel=1e-5)
    assert 0 <= row["tail_latents"] < row["latents"]


def test_stream_report_needs_a_learned_codec():
    from cdlib.eval import stream_report

    with pytest.raises(ValueError, match="learned codec"):
        stream_report(get_codec("jpeg"), [_photo(16, 16)])


def test_encode_batch_codes_same_size_images_in_one_forward_pass():
    """The batched path exists (the chapters' numbers and speed depend on it): 5 same-size images, one
    ``compress`` call; images of mixed sizes fall back to one call each.  The hyperprior computes its scales
    stream by stream inside ``compress`` (``exact_entropy_parameters``), so it is batched too; CompressAI's own
    mean-scale hyperprior, whose batched hyper-synthesis may flip a scale index, is encoded one at a time."""
    from compressai.models import MeanScaleHyperprior

    rng = np.random.default_rng(0)
    same = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    plain = MeanScaleHyperprior(N=16, M=24)
    plain.update(force=True)
    for name, batched in (("factorized", [5]), ("hyperprior", [5]), ("compressai", [1] * 5)):
        model = plain if name == "compressai" else create_model(name, "laptop")
        codec = LearnedCodec([model], name=name)
        calls = []
        original = model.compress
        model.compress = lambda x, original=original, calls=calls: calls.append(x.shape[0]) or original(x)
        streams = codec.encode_batch(same, 0)
        assert calls == batched and len(streams) == 5, name
        assert [codec.decode(s).shape for s in streams] == [(64, 64, 3)] * 5
        calls.clear()
        codec.encode_batch(same[:2] + [same[2][:32]], 0)
        assert calls == [1, 1, 1], name
