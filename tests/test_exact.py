"""cdlib.exact: entropy parameters computed stream by stream, so batched encoders and one-stream decoders agree."""
import numpy as np
import torch

from cdlib.exact import exact_inference, exactly
from cdlib.registry import create_model


def test_exactly_runs_image_by_image_on_one_thread_only_inside_the_block():
    seen = []

    def fn(t):
        seen.append((t.shape[0], torch.get_num_threads()))
        return t * 2

    x = torch.arange(6.0).view(3, 2)
    threads = torch.get_num_threads()
    assert torch.equal(exactly(fn, x), x * 2) and seen == [(3, threads)]
    seen.clear()
    with exact_inference():
        assert torch.equal(exactly(fn, x), x * 2)
    assert seen == [(1, 1)] * 3
    assert torch.get_num_threads() == threads
    seen.clear()
    exactly(fn, x)  # the block left no state behind
    assert seen == [(3, threads)]


def test_a_batch_encoded_hyperprior_decodes_stream_by_stream_to_the_encoders_symbols():
    """Each stream of a batch of 8, decoded on its own, gives y_hat = round(y - means) + means with the
    encoder's y and the means that a one-stream decoder computes: the range decoder did not go astray."""
    torch.manual_seed(0)
    model = create_model("hyperprior", "laptop").eval()
    model.update(force=True)
    x = torch.from_numpy(np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32))
    with torch.no_grad():
        out = model.compress(x)
        y = model.g_a(x)
        for i in range(8):
            strings = [[s[i]] for s in out["strings"]]
            z_hat = model.entropy_bottleneck.decompress(strings[1], out["shape"])
            _, means = model.h_s(z_hat).chunk(2, 1)
            y_hat = model.gaussian_conditional.decompress(strings[0], model.gaussian_conditional.build_indexes(
                model.h_s(z_hat).chunk(2, 1)[0]), means=means)
            expected = torch.round(y[i:i + 1] - means) + means
            assert torch.equal(y_hat, expected), i
